"""A contextual student as a sentence-transformers module: the trained model, not its rows.

A contextual export (:func:`embres.export.export_contextual`: the hybrid, the transferred
blocks, a language's two-block student) names this class in its ``modules.json``, so::

    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer("workdirs/language_hybrid/export", trust_remote_code=True)

runs the student's own context path through embres (which must be installed), giving the
vectors :func:`embres.export.load_student` gives. ``trust_remote_code=True`` is
sentence-transformers' consent to import a class outside its own package; without it, it
refuses with a message saying so. Model2Vec (and anything reading ``model.safetensors``
alone) still sees the static rows only.

Tokenisation is the student's own (its tokenizer, no special tokens, ``[UNK]`` not pooled);
the module returns ``sentence_embedding`` (L2-normalised when the export says so).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from embres.export import load_student


class ContextualStudentModule(torch.nn.Module):
    """sentence-transformers module running an embres contextual export.

    Args:
      directory: the export folder (``embres_static.json``, ``adapter.safetensors``...).
    """

    def __init__(self, directory: str | os.PathLike):
        super().__init__()
        self.directory = Path(directory)
        self.student = load_student(self.directory)
        if self.student.kind == "static":
            raise ValueError(
                f"{self.directory} is a static export: sentence-transformers loads it with "
                "its own StaticEmbedding, not with this module"
            )

    def tokenize(self, texts: list[str], **kwargs) -> dict[str, torch.Tensor]:
        """Token ids (the student's tokenizer, no special tokens), right-padded with 0."""
        rows = self.student.token_ids(list(texts))
        lengths = np.asarray([len(r) for r in rows], np.int64)
        ids = np.zeros((len(rows), max(lengths.max(initial=0), 1)), np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
        return {"input_ids": torch.from_numpy(ids), "lengths": torch.from_numpy(lengths)}

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ids = features["input_ids"].cpu().numpy()
        lengths = features["lengths"].cpu().numpy()
        rows = [ids[i, :n] for i, n in enumerate(lengths)]
        vectors = self.student.encode_ids(rows)
        features["sentence_embedding"] = torch.from_numpy(vectors).to(features["input_ids"].device)
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return int(self.student.dim)

    get_embedding_dimension = get_sentence_embedding_dimension  # sentence-transformers >= 5

    def save(self, output_path: str, *args, **kwargs) -> None:
        """The export folder is the module's files: saving elsewhere is refused, not faked."""
        if Path(output_path).resolve() != self.directory.resolve():
            raise NotImplementedError(
                f"save to {output_path}: an embres contextual student is saved by embres "
                f"(embres.export.export_contextual); its files are in {self.directory}"
            )

    @staticmethod
    def load(input_path: str) -> ContextualStudentModule:
        return ContextualStudentModule(input_path)
