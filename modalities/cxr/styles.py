"""Deterministic report-style variants for the robustness evaluation (as in LLM2VEC4CXR): the same
content written with radiology abbreviations, or with its negations reworded.

Pure functions of the text (no randomness): the same input always gives the same variant.
"""

from __future__ import annotations

import re

# phrase -> abbreviation; longest phrases first so "right lower lobe" wins over "right"
ABBREVIATIONS = {
    "no acute cardiopulmonary abnormality": "NACPA",
    "no acute cardiopulmonary abnormalities": "NACPA",
    "no acute cardiopulmonary disease": "NACPD",
    "no acute cardiopulmonary process": "NACPP",
    "chronic obstructive pulmonary disease": "COPD",
    "congestive heart failure": "CHF",
    "cardiomediastinal silhouette": "CMS",
    "right lower lobe": "RLL",
    "left lower lobe": "LLL",
    "right upper lobe": "RUL",
    "left upper lobe": "LUL",
    "right middle lobe": "RML",
    "pleural effusions": "pl effs",
    "pleural effusion": "pl eff",
    "within normal limits": "WNL",
    "posteroanterior": "PA",
    "anteroposterior": "AP",
    "cardiopulmonary": "CP",
    "pneumothorax": "PTX",
    "pneumothoraces": "PTXs",
    "atelectasis": "atx",
    "consolidation": "consol",
    "degenerative": "degen",
    "status post": "s/p",
    "history of": "h/o",
    "bilateral": "b/l",
    "bilaterally": "b/l",
    "without": "w/o",
    "with": "w/",
    "thoracic": "T",
    "interval": "intvl",
    "radiograph": "CXR",
    "unchanged": "unchd",
    "normal": "nl",
}
_ABBREV = re.compile(
    r"\b(" + "|".join(re.escape(k) for k in sorted(ABBREVIATIONS, key=len, reverse=True)) + r")\b",
    re.IGNORECASE,
)


def abbreviate(text: str) -> str:
    """Replace common radiology phrases by their abbreviations ("pneumothorax" -> "PTX")."""
    return _ABBREV.sub(lambda m: ABBREVIATIONS[m.group(0).lower()], text)


# negation patterns, applied per sentence, first match wins
_NEGATIONS = (
    # "No pleural effusion or pneumothorax." -> "Pleural effusion or pneumothorax is absent."
    (re.compile(r"^no evidence of (.+)$", re.IGNORECASE), lambda m: f"{_cap(m.group(1))} is not seen"),
    (re.compile(r"^there is no (.+)$", re.IGNORECASE), lambda m: f"{_cap(m.group(1))} is absent"),
    (re.compile(r"^there are no (.+)$", re.IGNORECASE), lambda m: f"{_cap(m.group(1))} are absent"),
    (re.compile(r"^no (.+)$", re.IGNORECASE), lambda m: f"Negative for {m.group(1)}"),
    (re.compile(r"^(.+?) (?:is|are) not (?:seen|identified|present|visualized)$", re.IGNORECASE),
     lambda m: f"No {m.group(1)[:1].lower() + m.group(1)[1:]} is evident"),
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def reword_negations(text: str) -> str:
    """Rewrite negated sentences with another negation form ("No effusion." -> "Negative for
    effusion."; "There is no X." -> "X is absent."); other sentences are left as they are."""
    out = []
    for sentence in _SENTENCE.split(text.strip()):
        body, end = (sentence[:-1], sentence[-1]) if sentence and sentence[-1] in ".!?" else (sentence, "")
        for pattern, rewrite in _NEGATIONS:
            m = pattern.match(body)
            if m:
                body = rewrite(m)
                break
        out.append(body + end)
    return " ".join(out)


STYLES = {
    "original": lambda t: t,
    "abbreviated": abbreviate,
    "negations_reworded": reword_negations,
    "abbreviated_and_reworded": lambda t: abbreviate(reword_negations(t)),
}
