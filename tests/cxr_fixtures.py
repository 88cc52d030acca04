"""OpenI-format report files written by the tests (the real collection is not committed)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import torch

FINDINGS = [
    "The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax.",
    "Cardiomegaly is present. There is a small right pleural effusion. No pneumothorax.",
    "There is a right upper lobe opacity concerning for pneumonia. Heart size is normal.",
    "Left apical pneumothorax is seen. No focal consolidation. Normal cardiomediastinal silhouette.",
    "A 1 cm nodule in the left lower lobe. No pleural effusion. The heart is normal.",
    "Bilateral interstitial opacities. Mild cardiomegaly. Degenerative changes of the thoracic spine.",
]
IMPRESSIONS = [
    "No acute cardiopulmonary abnormality.",
    "Cardiomegaly with small right pleural effusion.",
    "Right upper lobe pneumonia.",
    "Left pneumothorax.",
    "Left lower lobe nodule.",
    "Interstitial edema, mild cardiomegaly.",
]


def openi_xml(uid: str, findings: str = "", impression: str = "", mesh: tuple[str, ...] = ()) -> str:
    sections = "".join(
        f'<AbstractText Label="{label}">{text}</AbstractText>'
        for label, text in (("FINDINGS", findings), ("IMPRESSION", impression)) if text is not None
    )
    majors = "".join(f"<major>{m}</major>" for m in mesh)
    return (f'<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="{uid}"/><MedlineCitation><Article>'
            f"<Abstract>{sections}</Abstract></Article></MedlineCitation><MeSH>{majors}</MeSH>"
            f'<parentImage id="{uid}_IM-1"/></eCitation>')


def write_reports(folder: Path, n: int = 120, seed: int = 0) -> Path:
    """n reports mixing the templates above (findings i, impression i), plus bad files."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for k in range(n):
        j = int(torch.randint(0, len(FINDINGS), (1,), generator=g))
        extra = " Stable degenerative change." if k % 3 == 0 else ""
        (folder / f"{k + 1}.xml").write_text(openi_xml(f"CXR{k + 1}", FINDINGS[j] + extra, IMPRESSIONS[j],
                                                       ("Cardiomegaly/mild",) if j in (1, 5) else ("normal",)))
    (folder / f"{n + 1}.xml").write_text(openi_xml(f"CXR{n + 1}", "", ""))  # no findings, no impression
    (folder / f"{n + 2}.xml").write_text("<eCitation><uId id='broken'>")  # not well-formed
    return folder


def write_tgz(folder: Path, target: Path) -> Path:
    with tarfile.open(target, "w:gz") as tar:
        tar.add(folder, arcname="ecgen-radiology")
    return target


def text_tower_folder(folder: Path, reports: Path, vocab_size: int = 200) -> Path:
    """A tiny BERT-shaped text tower exported as a run would (tokenizer.json, meta.modality text)."""
    import modalities
    from modalities.cxr import TextTower, read_openi
    from modalities.text import train_wordpiece
    from tasks.cxr import export_tower

    tok = train_wordpiece([r.text for r in read_openi(reports)], vocab_size)
    torch.manual_seed(0)
    tower = TextTower(modalities.create_encoder("bert-tiny", vocab_size=vocab_size, num_layers=1), "mean").eval()
    out = export_tower(tower, folder, modality="text")
    tok.save(str(out / "tokenizer.json"))
    return out


def dual_tower_folder(folder: Path, reports: Path, vocab_size: int = 200, image_size: int = 32) -> Path:
    """A tiny dual tower (LLM2Vec text tower, timm resnet10t) exported as a clip run would."""
    import json

    from modalities.cxr import (
        DualTower,
        ImageTower,
        LLM2VecConfig,
        LLM2VecEncoder,
        read_openi,
        tiny_decoder,
    )
    from modalities.text import train_wordpiece
    from tasks.cxr import CLIPSystem

    tok = train_wordpiece([r.text for r in read_openi(reports)], vocab_size)
    torch.manual_seed(0)
    text = LLM2VecEncoder(LLM2VecConfig(decoder=tiny_decoder(vocab_size=vocab_size)))
    system = CLIPSystem(DualTower(ImageTower("resnet10t", image_size=image_size), text, embed_dim=16))
    out = system.export_encoder(folder, modality="text")
    tok.save(str(out / "tokenizer.json"))
    (out / "dual_tower" / "preprocess.json").write_text(json.dumps({"image_size": image_size}))
    return out
