"""``compress.vocabulary=train``: a text model keeps only the embedding rows of the tokens its data uses.

MiniLM-L6's word embedding is 30,522 x 384 fp32 = 47 MB, half the model: no student of the encoder
alone gets under a tenth of the dense size while it stays. A domain uses a small share of a
general-purpose vocabulary (the topics set: ~80 tokens), so the kept rows are the token ids the
TRAINING split holds plus the tokenizer's special tokens; every other id reads the [UNK] row.

The tokenizer and the serving path stay as they are: the model itself maps the full tokenizer's
ids to its rows by a lookup table (one int32 per id, 122 KB for MiniLM), which exports to ONNX as
one more Gather ahead of the embedding's. A token the training split never held therefore reads
as [UNK], which is what the model would have learnt little about anyway; the accuracy drop is
measured on the whole validation split as for every recipe.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn


class RemappedEmbedding(nn.Module):
    """An embedding over the kept token ids only, indexed by the full vocabulary's ids."""

    def __init__(self, embedding: nn.Embedding, keep: torch.Tensor, unk_id: int) -> None:
        super().__init__()
        keep = torch.unique(torch.cat([keep.long(), torch.tensor([unk_id])]))  # sorted, [UNK] included
        remap = torch.full((embedding.num_embeddings,), int((keep == unk_id).nonzero()), dtype=torch.int32)
        remap[keep] = torch.arange(len(keep), dtype=torch.int32)
        self.register_buffer("remap", remap)
        padding = None if embedding.padding_idx is None else int(remap[embedding.padding_idx])
        self.rows = nn.Embedding(len(keep), embedding.embedding_dim, padding_idx=padding)
        with torch.no_grad():
            self.rows.weight.copy_(embedding.weight[keep])

    @property
    def weight(self) -> torch.Tensor:  # HF reads the input embedding's weight for its dtype and device
        return self.rows.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.rows(self.remap[input_ids])


def used_token_ids(input_ids: np.ndarray, special_ids: list[int]) -> torch.Tensor:
    """The sorted ids that occur in ``input_ids`` (the training split's rows), special tokens included."""
    return torch.from_numpy(np.union1d(np.unique(input_ids), np.asarray(special_ids, dtype=input_ids.dtype)))


def shrink_vocabulary(model: nn.Module, input_ids: np.ndarray, tokenizer, keep: torch.Tensor | None = None) -> nn.Module:
    """A copy of a HF text classifier (``model.hf``) whose input embedding keeps the rows of the ids
    ``input_ids`` uses (see the module's docstring); its logits on rows of those ids are unchanged.
    ``keep``: those ids, when the caller has them already (``used_token_ids``)."""
    hf = getattr(model, "hf", None)
    if hf is None:
        raise ValueError("compress.vocabulary=train: only Hugging Face text models (model.name=hf) have a vocabulary")
    if tokenizer.unk_token_id is None:
        raise ValueError("compress.vocabulary=train: the tokenizer has no [UNK] token for the ids it drops")
    shrunk = copy.deepcopy(model).eval()
    keep = keep if keep is not None else used_token_ids(np.asarray(input_ids), list(tokenizer.all_special_ids))
    shrunk.hf.set_input_embeddings(RemappedEmbedding(shrunk.hf.get_input_embeddings(), keep, tokenizer.unk_token_id))
    return shrunk
