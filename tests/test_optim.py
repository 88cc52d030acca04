"""AdamW's update kernels agree, and the run-time speed levers reach every backbone of a system."""

import pytest
import torch
from torch import nn

from modalities.backbone import Backbone, BackboneConfig
from tasks.callbacks import TrainingLevers
from tasks.optim import IMPLEMENTATIONS, adamw, build_optimizer, param_groups


def test_fused_foreach_and_for_loop_adamw_take_the_same_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 3))
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    finals = {}
    for impl in IMPLEMENTATIONS:
        m = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 3))
        m.load_state_dict(model.state_dict())
        opt = adamw(param_groups(m, 0.01), 1e-2, (0.9, 0.999), 1e-8, impl)
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
        finals[impl] = torch.cat([p.detach().flatten() for p in m.parameters()])
    start = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (finals["for-loop"] - start).abs().max() > 1e-3  # the steps moved the weights
    for impl in ("fused", "foreach"):
        assert (finals[impl] - finals["for-loop"]).abs().max() < 1e-6, impl


def test_build_optimizer_uses_the_fused_kernel_and_refuses_an_unknown_one():
    model = nn.Linear(4, 4)
    opt = build_optimizer(model, 1e-3, 0.01, (0.9, 0.999), 1e-8, 0.1, 10, "linear")["optimizer"]
    assert opt.defaults["fused"] is True
    with pytest.raises(ValueError, match="AdamW implementation 'apex' is not one of fused, foreach, for-loop"):
        build_optimizer(model, 1e-3, 0.01, (0.9, 0.999), 1e-8, 0.1, 10, "linear", implementation="apex")


def test_training_levers_reach_every_backbone_and_refuse_a_system_without_one():
    cfg = BackboneConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    system = nn.ModuleDict({"student": Backbone(cfg), "teacher": Backbone(cfg)})
    TrainingLevers(checkpointing=True).apply(system)
    assert system["student"].checkpointing and system["teacher"].checkpointing
    assert not Backbone(cfg).checkpointing  # a class default, not a shared switch
    with pytest.raises(ValueError, match="TrainingLevers: Linear has no shared Backbone"):
        TrainingLevers(checkpointing=True).apply(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="compile_mode 'bogus' is not one of default, reduce-overhead"):
        TrainingLevers(compile=True, compile_mode="bogus")


def test_training_levers_reach_a_backbone_the_system_builds_in_its_own_setup(tmp_path):
    import lightning as L

    cfg = BackboneConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)

    class BuildsInSetup(L.LightningModule):  # as BERT4Rec / SASRec do when num_items comes from the data
        def setup(self, stage):
            self.backbone = Backbone(cfg)
            self.seen = []

        def training_step(self, batch, batch_idx):
            self.seen.append(self.backbone.checkpointing)
            return self.backbone(batch).last_hidden_state.pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), 0.1)

    model = BuildsInSetup()
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[TrainingLevers(checkpointing=True)])
    trainer.fit(model, torch.utils.data.DataLoader(torch.randn(4, 5, 16), batch_size=2))
    assert model.seen == [True, True]  # set on the network that trained, not on none at callback set-up


def test_a_fused_adamw_allows_gradient_clipping_under_bf16_mixed_precision(tmp_path):
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return self.net(batch).pow(2).mean()

        def configure_optimizers(self):
            return build_optimizer(self, 1e-2, 0.01, (0.9, 0.999), 1e-8, 0.0, 2, "constant")

    torch.manual_seed(0)
    model = Tiny()
    before = model.net.weight.detach().clone()
    trainer = L.Trainer(accelerator="cpu", max_steps=2, precision="bf16-mixed", gradient_clip_val=1.0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(model, torch.utils.data.DataLoader(torch.randn(8, 4), batch_size=4))
    assert trainer.optimizers[0].defaults["fused"] is True
    assert not torch.equal(model.net.weight, before)
