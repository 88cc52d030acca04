import os

# `make test` runs the suite on pytest-xdist workers, one per core: each runs torch on one thread (two
# threads a worker on two cores spin-wait on each other: the suite took 5 min 13 s so, 3 min 41 s so),
# and so do the processes the tests start (DDP ranks, `tessera` subprocesses), through the environment
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# the code tests' shared fixtures (functions, benchmark_dir) live beside their helpers
pytest_plugins = ["code_fixtures"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach a hub from the tests
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def ragged_mask(lengths, T=None):
    """(B, T) bool mask with real tokens first."""
    T = T or max(lengths)
    return torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny
    models gain nothing from a second thread, and on a shared machine its spin-waiting costs ten times
    the work (the RVQ-VAE resume row: 1.2 s of CPU on one thread, 21 s on two at load 20)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def text_corpus(tmp_path):
    """A small English text corpus (blank-line separated documents) written by the test."""
    words = (
        "the model reads a sequence of tokens and predicts the masked ones from their context "
        "while the optimizer lowers the loss step by step on every batch of documents"
    ).split()
    g = torch.Generator().manual_seed(0)
    docs = []
    for i in range(400):
        n = int(torch.randint(8, 40, (1,), generator=g))
        idx = torch.randint(0, len(words), (n,), generator=g).tolist()
        docs.append(" ".join(words[j] for j in idx) + f" document {i % 17}.")
    folder = tmp_path / "corpus"
    folder.mkdir()
    for k in range(8):  # eight files: the val split is by file
        (folder / f"part{k}.txt").write_text("\n\n".join(docs[k::8]) + "\n")
    return folder


import lightning as L  # noqa: E402


class CrashAt(L.Callback):
    """Simulates a crash (power loss, OOM kill) after a given optimizer step."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            raise RuntimeError(f"simulated crash at step {trainer.global_step}")


class KillAt(L.Callback):
    """Kills its own process with SIGKILL (no clean-up, no exception handlers) after a given step."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), 9)


def pytest_collection_modifyitems(config, items):
    """`gpu`-marked tests need CUDA: skipped, with the reason, where there is none."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run scripts/gpu_check.sh where one is)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
