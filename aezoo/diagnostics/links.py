"""Link prediction on held-out node pairs: a graph model's scores and two baselines, ROC AUC and AP.

The protocol of "Variational Graph Auto-Encoders" (Kipf & Welling, arXiv:1611.07308): the test pairs
(held-out edges and as many non-edges, :func:`aezoo.data.graphs.link_split`) are scored from the
training graph alone, and scored by the area under the ROC curve and the average precision
(scikit-learn). A model scores a pair ``sigmoid(mu_i . mu_j)`` with ``mu`` its guide's node embeddings
(``guide.embed``: the mean of q, or the point of a deterministic encoder); with several graphs the pairs of
all are pooled. Baselines on the training graph:

- ``adamic_adar``: the Adamic-Adar index, sum over common neighbours of ``1 / log degree`` (networkx);
- ``spectral``: the rank-``k`` reconstruction ``U_k diag(lambda_k) U_k^T`` of the normalised adjacency
  ``D^-1/2 (A + I) D^-1/2`` from its ``k`` largest eigenvalues (an inner product of spectral embeddings).

The paper reports on Cora (features, 85/5/10 split) AUC 91.4 and AP 92.6 for VGAE, 91.0 / 92.0 for GAE,
84.6 / 88.5 for spectral clustering; Cora is not bundled, so these are not reproduced offline.
"""

from __future__ import annotations

import networkx as nx
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import Tensor

from aezoo.core import Autoencoder, Data, to_device
from aezoo.diagnostics._traces import evaluating
from aezoo.nn import normalized_adjacency

PAPER_CORA = {"vgae": {"auc": 0.914, "ap": 0.926}, "gae": {"auc": 0.910, "ap": 0.920},
              "spectral": {"auc": 0.846, "ap": 0.885}}


def scored_pairs(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """The pairs ``(P, 2)`` (``i < j``) where ``mask`` ``(V, V)`` is True and their labels ``(P,)`` in ``x``."""
    pairs = (mask & torch.ones_like(mask).triu(1)).nonzero()
    return pairs, x[pairs[:, 0], pairs[:, 1]]


def metrics(scores: Tensor, labels: Tensor) -> dict[str, float]:
    """ROC AUC and average precision of ``scores`` against 0/1 ``labels`` (``(P,)`` each)."""
    y, s = labels.cpu().numpy(), scores.detach().cpu().double().numpy()
    return {"auc": float(roc_auc_score(y, s)), "ap": float(average_precision_score(y, s)), "num_pairs": len(y)}


def model_scores(ae: Autoencoder, data: Data, pairs: list[Tensor]) -> Tensor:
    """``sigmoid(mu_i . mu_j)`` at ``pairs[b]`` ``(P_b, 2)`` of each graph ``b`` of ``data`` (``(x, *covariates)``),
    concatenated ``(sum P_b,)``.

    Raises:
        ValueError: the guide has no ``embed`` (not a graph autoencoder).
    """
    embed = getattr(ae.guide, "embed", None)
    if embed is None:
        raise ValueError(f"link prediction needs a graph autoencoder whose guide has embed(); {ae.name} has none")
    with evaluating(ae) as device:
        mu = embed(*to_device(data, device)).cpu()
    return torch.cat([torch.sigmoid((m[p[:, 0]] * m[p[:, 1]]).sum(-1)) for m, p in zip(mu, pairs)])


def adamic_adar(adjacency: Tensor, pairs: Tensor) -> Tensor:
    """The Adamic-Adar index ``(P,)`` of ``pairs`` in the graph ``adjacency`` ``(V, V)`` (networkx)."""
    graph = nx.from_numpy_array(adjacency.cpu().numpy())
    return torch.tensor([s for _, _, s in nx.adamic_adar_index(graph, pairs.tolist())], dtype=torch.float64)


def spectral(adjacency: Tensor, pairs: Tensor, dim: int = 16) -> Tensor:
    """Scores ``(P,)`` from the rank-``dim`` reconstruction of the normalised ``adjacency`` ``(V, V)``."""
    values, vectors = torch.linalg.eigh(normalized_adjacency(adjacency.double().cpu()))
    top = vectors[:, -dim:] * values[-dim:]
    return (top[pairs[:, 0]] * vectors[pairs[:, 1], -dim:]).sum(-1)


def link_prediction(ae: Autoencoder, data: Data) -> dict[str, dict]:
    """Link prediction on the test pairs of each graph, pooled: the model and both baselines.

    Args:
        ae: a graph autoencoder (``vgae``, ``gae``).
        data: ``(x, *covariates)`` of the test split in ``ae.covariates`` order (:class:`aezoo.data.Dataset`
            ``arrays("test", ae.covariate_names)``): ``x`` ``(B, V, V)`` the whole graphs, ``adjacency`` the
            training graphs, ``mask`` the test pairs.

    Returns:
        ``{"model": {...}, "adamic_adar": {...}, "spectral": {...}}``, each ``auc``, ``ap``, ``num_pairs``.

    Raises:
        ValueError: no ``adjacency`` or ``mask`` (no held-out pairs to score), or not a graph autoencoder.
    """
    given = dict(zip(ae.covariate_names, data[1:]))
    if given.get("adjacency") is None or given.get("mask") is None:
        raise ValueError("link prediction needs the covariates 'adjacency' (the training graph) and 'mask' (the "
                         "test pairs); use a graph data set (aezoo.data.graphs)")
    x, train, mask = data[0].cpu(), given["adjacency"].cpu(), given["mask"].cpu()
    pairs, labels = zip(*(scored_pairs(x[b], mask[b]) for b in range(len(x))))
    labels, dim = torch.cat(labels), min(16, x.shape[-1] - 1)
    return {"model": metrics(model_scores(ae, data, list(pairs)), labels),
            "adamic_adar": metrics(torch.cat([adamic_adar(a, p) for a, p in zip(train, pairs)]), labels),
            "spectral": metrics(torch.cat([spectral(a, p, dim) for a, p in zip(train, pairs)]), labels)}


__all__ = ["PAPER_CORA", "adamic_adar", "link_prediction", "metrics", "model_scores", "spectral", "scored_pairs"]
