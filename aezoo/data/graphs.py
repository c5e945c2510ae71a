"""Graphs for link prediction: generated ones, classic small ones, and Planetoid files on disk.

Each data set is one undirected graph of ``V`` nodes split for link prediction as in "Variational
Graph Auto-Encoders" (Kipf & Welling, arXiv:1611.07308) by :func:`link_split`: 5% of the edges held
out for validation and 10% for testing, each with as many non-edges, seeded. A datum is a graph:

- train: ``x`` ``(1, V, V)`` the training graph (held-out edges removed); covariates ``adjacency``
  (the same graph, what the encoder sees), ``mask`` (every pair except the held-out ones) and, where
  the graph has them, node ``features`` ``(1, V, F)``;
- test: ``x`` the whole graph, ``adjacency`` the training graph (no held-out edge reaches the
  encoder), ``mask`` the test pairs (test edges and as many non-edges): the pairs link prediction scores.

Sources (no download): ``sbm`` (planted partition, 4 blocks of 25 nodes, p_in = 0.3, p_out = 0.02),
``lfr`` (the LFR benchmark graph of networkx's documentation, 250 nodes), both with node features
(the community one-hot plus standard normal noise), and the featureless ``karate`` club (34 nodes)
and ``les_miserables`` co-occurrences (77 nodes). ``cora``, ``citeseer`` and ``pubmed`` read the
Planetoid files (``ind.<name>.allx``, ``tx``, ``ally``, ``ty``, ``graph``, ``test.index``; ``x`` and ``y`` unused)
from the folder ``$AEZOO_PLANETOID`` (:func:`read_planetoid`); the graphs are dense ``(V, V)``
tensors, so Pubmed (19,717 nodes) takes 1.6 GB per copy.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np
import torch
from torch import Tensor

from aezoo.data.base import STATIC_SEED, Dataset, Source

KINDS = {"features": "continuous", "adjacency": "graph", "mask": "mask"}
PLANETOID = ("cora", "citeseer", "pubmed")
PLANETOID_PARTS = ("tx", "allx", "ty", "ally", "graph")


@dataclass(frozen=True)
class LinkSplit:
    """Held-out node pairs of a graph; each pair array is ``(P, 2)`` int64 with ``i < j``.

    Attributes:
        train: the training adjacency ``(V, V)``, the held-out edges removed.
        val_edges, val_non_edges, test_edges, test_non_edges: the held-out pairs.
    """

    train: Tensor
    val_edges: Tensor
    val_non_edges: Tensor
    test_edges: Tensor
    test_non_edges: Tensor

    def mask(self, *names: str) -> Tensor:
        """Bool ``(V, V)``, symmetric, True on the pairs of the named fields (e.g. ``"test_edges"``)."""
        out = torch.zeros_like(self.train, dtype=torch.bool)
        for name in names:
            i, j = getattr(self, name).T
            out[i, j] = out[j, i] = True
        return out

    @property
    def held_out(self) -> Tensor:
        """Bool ``(V, V)``: every validation and test pair."""
        return self.mask("val_edges", "val_non_edges", "test_edges", "test_non_edges")


def link_split(adjacency: Tensor, val: float = 0.05, test: float = 0.10, seed: int = 0) -> LinkSplit:
    """Hold out ``val`` and ``test`` shares of the edges of ``adjacency`` ``(V, V)`` and as many non-edges each.

    Edges are drawn by a seeded permutation (at least one per held-out set); non-edges uniformly
    among the pairs ``i < j`` without an edge, the two sets disjoint.

    Raises:
        ValueError: not a symmetric 0/1 square matrix, shares outside (0, 1) summing to 1 or more, or too few
            edges or non-edges to hold out.
    """
    v = adjacency.shape[-1]
    if adjacency.shape != (v, v) or not ((adjacency == 0) | (adjacency == 1)).all() or not torch.equal(
            adjacency, adjacency.T):
        raise ValueError(f"link_split needs a symmetric 0/1 adjacency (V, V), got {tuple(adjacency.shape)}")
    if not (0 < val < 1 and 0 < test < 1 and val + test < 1):
        raise ValueError(f"val and test must be shares in (0, 1) with val + test < 1, got {val} and {test}")
    upper = torch.ones(v, v, dtype=torch.bool).triu(1)
    edges = (upper & (adjacency > 0)).nonzero()
    non_edges = (upper & (adjacency == 0)).nonzero()
    gen = torch.Generator().manual_seed(seed)
    n_val, n_test = max(1, round(val * len(edges))), max(1, round(test * len(edges)))
    if n_val + n_test >= len(edges) or n_val + n_test > len(non_edges):
        raise ValueError(f"the graph has {len(edges)} edges and {len(non_edges)} non-edges, too few to hold out "
                         f"{n_val} + {n_test} of each")
    e = edges[torch.randperm(len(edges), generator=gen)]
    ne = non_edges[torch.randperm(len(non_edges), generator=gen)[: n_val + n_test]]
    train = adjacency.clone()
    i, j = e[: n_val + n_test].T
    train[i, j] = train[j, i] = 0
    return LinkSplit(train, e[:n_val], ne[:n_val], e[n_val: n_val + n_test], ne[n_val:])


def graph_dataset(name: str, adjacency: Tensor, features: Tensor | None = None, seed: int = STATIC_SEED,
                  **shares: float) -> Dataset:
    """The link-prediction :class:`Dataset` of one graph (module docstring); ``shares``: ``val``, ``test``."""
    adjacency = adjacency.float()
    split = link_split(adjacency, seed=seed, **shares)
    feats = {} if features is None else {"features": features.float()[None]}
    train = {**feats, "adjacency": split.train[None], "mask": ~split.held_out[None]}
    test = {**feats, "adjacency": split.train[None], "mask": split.mask("test_edges", "test_non_edges")[None]}
    return Dataset(name, split.train[None], adjacency[None], "none", train_covariates=train, test_covariates=test,
                   kinds={k: KINDS[k] for k in train})


def from_networkx(graph: nx.Graph) -> Tensor:
    """The 0/1 adjacency ``(V, V)`` of ``graph`` (nodes in its order; weights and self-loops dropped)."""
    a = torch.as_tensor(nx.to_numpy_array(graph, weight=None), dtype=torch.float32)
    return a.fill_diagonal_(0)


def community_features(communities: list[set], num_nodes: int, seed: int, noise: float = 1.0) -> Tensor:
    """``(V, C)``: each node's community one-hot plus ``noise`` times standard normal noise (seeded)."""
    out = torch.zeros(num_nodes, len(communities))
    for c, members in enumerate(communities):
        out[sorted(members), c] = 1.0
    return out + noise * torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))


def sbm(seed: int = STATIC_SEED) -> tuple[Tensor, Tensor]:
    """A planted-partition graph (4 blocks of 25, p_in = 0.3, p_out = 0.02) and its features ``(100, 4)``."""
    sizes = [25] * 4
    probs = [[0.3 if a == b else 0.02 for b in range(4)] for a in range(4)]
    graph = nx.stochastic_block_model(sizes, probs, seed=seed)
    return from_networkx(graph), community_features(graph.graph["partition"], len(graph), seed)


def lfr(seed: int = 10) -> tuple[Tensor, Tensor]:
    """The LFR benchmark graph of networkx's documentation (250 nodes, mixing 0.1) and community features."""
    graph = nx.LFR_benchmark_graph(250, 3, 1.5, 0.1, average_degree=5, min_community=20, seed=seed)
    communities = list({frozenset(graph.nodes[v]["community"]) for v in graph})
    return from_networkx(graph), community_features(communities, len(graph), seed)


def read_planetoid(root: str | Path, name: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(adjacency (V, V), features (V, F), labels (V,))`` from Planetoid files ``root/ind.<name>.*``.

    As Kipf's ``gae`` reads them: node ``i < len(allx)`` has the row ``i`` of ``allx`` (and ``ally``), node
    ``test.index[k]`` the row ``k`` of ``tx`` (and ``ty``); nodes in between that are in neither (Citeseer's
    isolated nodes) get zero features and label 0. ``x`` and ``y`` (the labelled subset) are not needed.
    The files are pickles: read only files you trust.

    Raises:
        FileNotFoundError: a file is missing (the message names it).
    """
    root = Path(root)
    parts = {}
    for part in (*PLANETOID_PARTS, "test.index"):
        path = root / f"ind.{name}.{part}"
        if not path.is_file():
            raise FileNotFoundError(f"Planetoid file {path} is missing; {name} needs ind.{name}.{{"
                                    f"{','.join(PLANETOID_PARTS)},test.index}} in {root}")
        if part == "test.index":
            index = np.loadtxt(path, dtype=np.int64, ndmin=1)
            continue
        with open(path, "rb") as f:
            value = pickle.load(f, encoding="latin1")
        parts[part] = value if part == "graph" else np.asarray(
            value.todense() if hasattr(value, "todense") else value, dtype=np.float32)
    n = max(len(parts["allx"]), int(index.max()) + 1)
    features = np.zeros((n, parts["allx"].shape[1]), np.float32)
    labels = np.zeros((n, parts["ally"].shape[1]), np.float32)
    features[: len(parts["allx"])], labels[: len(parts["ally"])] = parts["allx"], parts["ally"]
    features[index], labels[index] = parts["tx"], parts["ty"]
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from((a, b) for a, nbrs in parts["graph"].items() for b in nbrs if a != b and max(a, b) < n)
    return from_networkx(graph), torch.as_tensor(features), torch.as_tensor(labels.argmax(1))


def _source(make, description: str, covariates: tuple[str, ...]) -> Source:
    name = make.__name__

    def load(binarization: str = "none", train_size: int | None = None, test_size: int | None = None) -> Dataset:
        if train_size is not None or test_size is not None:
            raise ValueError(f"{name} is one graph split by node pairs; train_size and test_size do not apply")
        return graph_dataset(name, *make())

    return Source(load, description, covariates, layout="graphs")


def _planetoid(name: str):
    def make() -> tuple[Tensor, Tensor]:
        root = os.environ.get("AEZOO_PLANETOID")
        if not root:
            raise FileNotFoundError(f"{name} reads Planetoid files from the folder $AEZOO_PLANETOID (ind.{name}.x, "
                                    "...), which is not set; download them (e.g. github.com/kimiyoung/planetoid) "
                                    "and export AEZOO_PLANETOID=/path/to/data")
        return read_planetoid(root, name)[:2]

    make.__name__ = name
    return make


def karate() -> tuple[Tensor]:
    return (from_networkx(nx.karate_club_graph()),)


def les_miserables() -> tuple[Tensor]:
    return (from_networkx(nx.les_miserables_graph()),)


SOURCES = {
    "sbm": _source(sbm, "planted-partition graph, 100 nodes in 4 blocks, noisy block features; link prediction",
                   ("features", "adjacency", "mask")),
    "lfr": _source(lfr, "LFR benchmark graph, 250 nodes, noisy community features; link prediction",
                   ("features", "adjacency", "mask")),
    "karate": _source(karate, "Zachary's karate club, 34 nodes, no features; link prediction", ("adjacency", "mask")),
    "les_miserables": _source(les_miserables, "Les Miserables co-occurrences, 77 nodes, no features; link "
                              "prediction", ("adjacency", "mask")),
    **{name: _source(_planetoid(name), f"Planetoid {name} from $AEZOO_PLANETOID (files on disk); link prediction",
                     ("features", "adjacency", "mask")) for name in PLANETOID},
}
