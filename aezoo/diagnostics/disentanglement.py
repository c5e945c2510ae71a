"""Disentanglement metrics from codes ``(N, D_z)`` and known discrete factors ``(N, F)``.

Each metric reads a pool of codes (e.g. the guide's means of test images) and the factor indices
of the same data: MIG, SAP, DCI, the FactorVAE score and InfoMEC, each citing its paper below
and saying where it departs from the reference implementation (``disentanglement_lib``, Locatello
et al., arXiv:1811.12359; ``latent_quantization`` for InfoMEC). Factors with a single value in
the pool carry no information and are left out of every metric. Every random choice (splits,
votes, estimators) follows ``seed``: the same inputs give the same numbers.

References:
    1. Isolating Sources of Disentanglement in Variational Autoencoders, Chen, Li, Grosse &
       Duvenaud, arXiv:1802.04942 (MIG).
    2. Variational Inference of Disentangled Latent Concepts from Unlabeled Observations, Kumar,
       Sattigeri & Balakrishnan, arXiv:1711.00848 (SAP).
    3. A Framework for the Quantitative Evaluation of Disentangled Representations, Eastwood &
       Williams, ICLR 2018 (DCI).
    4. Disentangling by Factorising, Kim & Mnih, arXiv:1802.05983 (the FactorVAE score).
    5. Disentanglement via Latent Quantization, Hsu, Dorrell, Whittington, Wu & Finn,
       arXiv:2305.18378 (InfoMEC).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.metrics import mutual_info_score

from aezoo.core import Autoencoder, rows

METRICS = ("mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness", "factorvae_score",
           "infomec_modularity", "infomec_compactness", "infomec_explicitness")
IMPORTANCES = ("lasso", "gbt")
MI_ESTIMATORS = ("knn", "bins")


def _arrays(codes, factors, least: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``(N, D)`` float64 and factors ``(N, F')`` as compact indices ``0 .. K_f - 1``, constant factors dropped.

    Raises:
        ValueError: wrong ranks, different lengths, fewer than ``least`` data, non-finite codes,
            non-integer factors, or no factor with two values.
    """
    codes = np.asarray(codes.detach().cpu() if isinstance(codes, torch.Tensor) else codes, dtype=np.float64)
    factors = np.asarray(factors.detach().cpu() if isinstance(factors, torch.Tensor) else factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
        raise ValueError(f"codes must be (N, D_z) and factors (N, F) with the same N, got {codes.shape} and "
                         f"{factors.shape}")
    if len(codes) < least:
        raise ValueError(f"the disentanglement metrics need at least {least} data, got {len(codes)}")
    if not np.isfinite(codes).all():
        raise ValueError("codes contain NaN or infinite values")
    if not (np.issubdtype(factors.dtype, np.integer) or np.array_equal(factors, np.round(factors))):
        raise ValueError(f"factors must be discrete (integer indices), got {factors.dtype}")
    compact = np.stack([np.unique(f, return_inverse=True)[1].reshape(-1) for f in factors.T], 1)
    kept = compact.max(0) > 0
    if not kept.any():
        raise ValueError("every factor takes a single value in these data: nothing to disentangle")
    return codes, compact[:, kept]


def factors_used(factors) -> np.ndarray:
    """``(F,)`` bool: the factors with at least two values, the ones every metric scores."""
    factors = np.asarray(factors.detach().cpu() if isinstance(factors, torch.Tensor) else factors)
    return np.array([len(np.unique(f)) > 1 for f in factors.T])


def discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Each latent cut into ``num_bins`` equal-width bins over its range ``(N, D)`` int (a constant latent: bin 0)."""
    out = np.zeros(codes.shape, dtype=np.int64)
    for j, z in enumerate(codes.T):
        edges = np.histogram_bin_edges(z, num_bins)
        out[:, j] = np.digitize(z, edges[1:-1])
    return out


def _mutual_information(binned: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """``(D, F)`` nats, the plug-in mutual information of each discretised latent with each factor."""
    return np.array([[mutual_info_score(f, z) for f in factors.T] for z in binned.T])


def _entropies(factors: np.ndarray) -> np.ndarray:
    return np.array([mutual_info_score(f, f) for f in factors.T])


def _split(n: int, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(max(int(round(test_fraction * n)), 1), n - 1)
    return order[n_test:], order[:n_test]


def mig(codes, factors, num_bins: int = 20) -> dict[str, Any]:
    """Mutual information gap [1]: per factor, the gap between the two latents most informative about it.

    ``I(z_j; v_k)`` is the plug-in estimate after cutting each latent into ``num_bins`` equal-width
    bins (as ``disentanglement_lib``; [1] integrates over q(z | x) on the full grid instead); the gap
    ``I(z_(1); v_k) - I(z_(2); v_k)`` is divided by ``H(v_k)`` and averaged over factors. A factor with
    more values than bins cannot reach 1. With one latent the gap is its normalised information.

    Returns:
        ``mig`` in [0, 1] and ``mig_per_factor`` ``[F]``.
    """
    codes, factors = _arrays(codes, factors)
    mi = _mutual_information(discretize(codes, num_bins), factors)
    top = -np.sort(-mi, axis=0)
    second = top[1] if len(top) > 1 else np.zeros(top.shape[1])
    gap = (top[0] - second) / _entropies(factors)
    return {"mig": float(gap.mean()), "mig_per_factor": gap.tolist()}


def _balanced_accuracy(y: np.ndarray, predicted: np.ndarray, adjusted: bool) -> float:
    """Mean recall over the classes present in ``y``; ``adjusted``: rescaled so chance is 0 and perfect 1."""
    classes = np.unique(y)
    score = float(np.mean([(predicted[y == c] == c).mean() for c in classes]))
    return (score - 1 / len(classes)) / (1 - 1 / len(classes)) if adjusted and len(classes) > 1 else score


def sap(codes, factors, seed: int = 0, test_fraction: float = 0.2, adjusted: bool = True) -> dict[str, Any]:
    """Separated attribute predictability [2]: per factor, the gap between the two latents that best predict it alone.

    The score of latent ``j`` for factor ``k`` is the balanced classification accuracy on held-out
    data (a seeded ``test_fraction`` of the pool) of a threshold classifier on ``z_j`` alone: a
    decision tree with at most ``2 K_k`` leaves and 5 data per leaf (``disentanglement_lib`` fits a
    linear SVM, which on one latent cannot cut out the middle values of a factor). With
    ``adjusted`` the accuracy is rescaled so that chance (``1 / K_k``) is 0 and perfect 1, and
    clipped at 0, so that the gap of a perfect code is 1 whatever the number of classes. The gap
    of the top two scores is averaged over factors.

    Returns:
        ``sap`` (at most 1), ``sap_per_factor`` ``[F]`` and ``sap_scores`` ``[D][F]``.
    """
    from sklearn.tree import DecisionTreeClassifier

    codes, factors = _arrays(codes, factors)
    train, test = _split(len(codes), seed, test_fraction)
    scores = np.zeros((codes.shape[1], factors.shape[1]))
    for k, f in enumerate(factors.T):
        for j, z in enumerate(codes.T):
            tree = DecisionTreeClassifier(max_leaf_nodes=max(2 * (int(f.max()) + 1), 2), min_samples_leaf=5,
                                          random_state=seed)
            tree.fit(z[train, None], f[train])
            scores[j, k] = _balanced_accuracy(f[test], tree.predict(z[test, None]), adjusted)
    if adjusted:
        scores = np.clip(scores, 0, None)
    top = -np.sort(-scores, axis=0)
    gap = top[0] - (top[1] if len(top) > 1 else 0)
    return {"sap": float(gap.mean()), "sap_per_factor": gap.tolist(), "sap_scores": scores.tolist()}


def _weighted_one_minus_entropy(p: np.ndarray) -> float:
    """``sum_i rho_i (1 - H_base(P_i.))`` over the rows ``i`` of a non-negative matrix, base = its number of columns."""
    total = p.sum()
    if total <= 0:
        return 0.0
    if p.shape[1] == 1:
        return 1.0
    share = p / np.where(p.sum(1, keepdims=True) > 0, p.sum(1, keepdims=True), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(share > 0, share * np.log(share), 0).sum(1) / math.log(p.shape[1])
    return float(((1 - entropy) * p.sum(1) / total).sum())


def dci(codes, factors, importance: str = "lasso", seed: int = 0, test_fraction: float = 0.2,
        alpha: float = 0.02, stages: int = 100) -> dict[str, Any]:
    """Disentanglement, completeness and informativeness [3] from an importance matrix ``R`` ``(D, F)``.

    ``importance="lasso"`` (the default, fast: [3]'s own choice): ``R_jk = |w_jk|`` of a Lasso
    (penalty ``alpha``) from the standardised codes to the standardised index of factor ``k``;
    informativeness is the held-out R^2, clipped at 0. ``"gbt"`` (``disentanglement_lib``'s choice,
    about 10 s for 2,000 data): the feature importances of scikit-learn's gradient-boosted trees
    (``stages`` boosting stages of depth-3 trees, one tree per class and stage) classifying factor
    ``k``; informativeness is the held-out accuracy. A linear importance misses factors that a code
    holds non-linearly (a circular orientation, a categorical shape). Disentanglement is
    ``sum_j rho_j (1 - H_F(P_j.))`` with ``P_jk = R_jk / sum_k R_jk`` and ``rho_j`` latent ``j``'s
    share of ``R``; completeness the same over factors with base ``D``. On a code that holds nothing
    about the factors the importances are noise, so disentanglement and completeness mean nothing
    there (a Lasso keeps a few noise weights, which look concentrated): read them beside
    informativeness.

    Returns:
        ``dci_disentanglement``, ``dci_completeness``, ``dci_informativeness`` in [0, 1] and
        ``dci_importance`` ``[D][F]``.

    Raises:
        ValueError: unknown ``importance``.
    """
    if importance not in IMPORTANCES:
        raise ValueError(f"unknown importance {importance!r}; choose one of {IMPORTANCES}")
    codes, factors = _arrays(codes, factors)
    train, test = _split(len(codes), seed, test_fraction)
    scale = codes[train].std(0)
    z = (codes - codes[train].mean(0)) / np.where(scale > 0, scale, 1)
    R = np.zeros((codes.shape[1], factors.shape[1]))
    informative = []
    for k, f in enumerate(factors.T):
        if importance == "lasso":
            from sklearn.exceptions import ConvergenceWarning
            from sklearn.linear_model import Lasso

            target = (f - f[train].mean()) / max(f[train].std(), 1e-12)
            with warnings.catch_warnings():  # nearly collinear codes (a collapsed encoder) converge slowly; the
                warnings.simplefilter("ignore", ConvergenceWarning)  # weights after max_iter are the importances
                model = Lasso(alpha=alpha, max_iter=5000).fit(z[train], target[train])
            R[:, k] = np.abs(model.coef_)
            informative.append(max(model.score(z[test], target[test]), 0.0))
        else:
            from sklearn.ensemble import GradientBoostingClassifier

            model = GradientBoostingClassifier(n_estimators=stages, random_state=seed).fit(z[train], f[train])
            R[:, k] = model.feature_importances_
            informative.append(float((model.predict(z[test]) == f[test]).mean()))
    return {"dci_disentanglement": _weighted_one_minus_entropy(R), "dci_completeness": _weighted_one_minus_entropy(R.T),
            "dci_informativeness": float(np.mean(informative)), "dci_importance": R.tolist()}


def factorvae_score(codes, factors, batch_size: int = 64, num_train: int = 10000, num_eval: int = 5000,
                    prune: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """The FactorVAE score [4]: accuracy of a majority vote from the least-varying latent to the fixed factor.

    Each vote picks a factor ``k`` at random, a value of it (that of a random datum), and
    ``batch_size`` data of the pool with that value (drawn with replacement), divides each latent
    by its standard deviation over the pool, and records the latent of smallest variance over the
    batch. The classifier maps each latent to the factor it most often wins for on ``num_train``
    votes; the score is its accuracy on ``num_eval`` fresh votes (chance: ``1 / F``). Latents whose
    variance over the pool is below ``prune`` are left out (collapsed units; 0.05 as
    ``disentanglement_lib``, for codes on the prior's unit scale). [4] draws each batch from the
    simulator with the factor fixed; a pool that samples the factor grid uniformly (the ``sprites``
    test split) gives the same batches.

    Returns:
        ``factorvae_score`` in [0, 1] (0 when no latent is active) and ``factorvae_active`` (the latents used).
    """
    codes, factors = _arrays(codes, factors)
    rng = np.random.default_rng(seed)
    variance = codes.var(0, ddof=1)
    active = variance >= prune
    if not active.any():
        return {"factorvae_score": 0.0, "factorvae_active": []}
    z = codes[:, active] / np.sqrt(variance[active])
    order = np.argsort(factors, axis=0, kind="stable")  # (N, F): the data sorted by each factor's value
    counts_of = np.zeros((factors.shape[1], int(factors.max()) + 1), dtype=np.int64)  # (F, K_max) data per value
    for k, f in enumerate(factors.T):
        counts_of[k, :f.max() + 1] = np.bincount(f)
    starts_of = np.cumsum(counts_of, 1) - counts_of  # where each value's data begin in ``order``

    def votes(n: int) -> np.ndarray:
        counts = np.zeros((z.shape[1], factors.shape[1]), dtype=np.int64)
        ks = rng.integers(factors.shape[1], size=n)
        values = factors[rng.integers(len(z), size=n), ks]
        size, start = counts_of[ks, values], starts_of[ks, values]
        keep = size > 1  # a value held by one datum has no variance to compare
        ks, size, start = ks[keep], size[keep], start[keep]
        picks = start[:, None] + (rng.random((len(ks), batch_size)) * size[:, None]).astype(np.int64)
        batches = order[picks, ks[:, None]]  # (n, batch_size) data with factor ks fixed
        least = z[batches].var(1, ddof=1).argmin(1)  # (n,)
        np.add.at(counts, (least, ks), 1)
        return counts

    train, held_out = votes(num_train), votes(num_eval)
    chosen = train.argmax(1)
    score = held_out[np.arange(len(chosen)), chosen].sum() / held_out.sum()
    return {"factorvae_score": float(score), "factorvae_active": np.flatnonzero(active).tolist()}


def _logistic_log_loss(x: np.ndarray, y: np.ndarray) -> float:
    """In-sample log loss of an unpenalised multinomial logistic regression with balanced class weights."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    model = LogisticRegression(C=np.inf, class_weight="balanced", max_iter=500)
    with warnings.catch_warnings():  # separable data (a perfect code) have no finite optimum: lbfgs stops at
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter with a log loss near 0, the answer
        model.fit(x, y)
    return float(log_loss(y, model.predict_proba(x), labels=model.classes_))


def infomec(codes, factors, estimator: str = "knn", num_bins: int = 20, seed: int = 0) -> dict[str, Any]:
    """InfoM (modularity), InfoC (compactness) and InfoE (explicitness) [5].

    ``NMI_kj = I(v_k; z_j) / H(v_k)`` with the k-nearest-neighbour estimator of scikit-learn's
    ``mutual_info_classif`` (10 neighbours, as [5]; ``estimator="bins"``: the discretised estimate
    of :func:`mig`). Latents whose range is under 1/20 of the largest are inactive and left out.
    InfoM is the mean over active latents of ``max_k NMI_kj / sum_k NMI_kj``, rescaled so that
    ``1 / F`` is 0 and 1 is 1; InfoC the same over factors with ``1 / D_active``. InfoE is the mean
    over factors of ``(H_0 - CE) / H_0``: the in-sample cross-entropy ``CE`` of a multinomial logistic
    regression from the standardised codes to the factor, against ``H_0`` of the same regression
    without features (balanced class weights, as [5]).

    Returns:
        ``infomec_modularity``, ``infomec_compactness``, ``infomec_explicitness`` (at most 1),
        ``infomec_nmi`` ``[F][D]`` and ``infomec_active`` (the latents used).

    Raises:
        ValueError: unknown ``estimator``.
    """
    if estimator not in MI_ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {MI_ESTIMATORS}")
    codes, factors = _arrays(codes, factors)
    scale = codes.std(0)
    z = (codes - codes.mean(0)) / np.where(scale > 0, scale, 1)
    if estimator == "knn":
        from sklearn.feature_selection import mutual_info_classif

        mi = np.array([[mutual_info_classif(zj[:, None], f, discrete_features=False, n_neighbors=10,
                                            random_state=seed)[0] for zj in z.T] for f in factors.T])
    else:
        mi = _mutual_information(discretize(codes, num_bins), factors).T
    nmi = mi / _entropies(factors)[:, None]  # (F, D)
    spread = codes.max(0) - codes.min(0)
    active = spread > spread.max() / 20 if spread.max() > 0 else np.zeros(len(spread), bool)
    F, D = nmi.shape[0], int(active.sum())

    def concentration(m: np.ndarray, n: int) -> float:  # mean over rows of max / sum, rescaled from 1/n
        if m.size == 0:
            return 0.0
        if n <= 1:
            return 1.0
        total = m.sum(1)
        ratio = np.where(total > 0, m.max(1) / np.where(total > 0, total, 1), 1 / n)
        return float((ratio.mean() - 1 / n) / (1 - 1 / n))

    pruned = nmi[:, active]
    null = np.zeros((len(z), 1))
    explicit = [1 - _logistic_log_loss(z, f) / _logistic_log_loss(null, f) for f in factors.T]
    return {"infomec_modularity": concentration(pruned.T, F), "infomec_compactness": concentration(pruned, D),
            "infomec_explicitness": float(np.mean(explicit)), "infomec_nmi": nmi.tolist(),
            "infomec_active": np.flatnonzero(active).tolist()}


@dataclass
class Disentanglement:
    """Every metric of this module on one pool of codes.

    Attributes:
        metrics: the flat scores, :data:`METRICS` -> float.
        details: per-factor scores and the matrices behind them (``mig_per_factor``, ``sap_scores``
            ``[D][F]``, ``dci_importance`` ``[D][F]``, ``infomec_nmi`` ``[F][D]``, ...).
        num_data: ``N``, the pool's size. factors: the names of the factors scored (constant ones left out).
    """

    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    num_data: int = 0
    factors: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the metrics, ``num_data``, ``factors`` and the details."""
        return {**self.metrics, "num_data": self.num_data, "factors": list(self.factors), **self.details}


def disentanglement(codes, factors, names: tuple[str, ...] | None = None, seed: int = 0, importance: str = "lasso",
                    estimator: str = "knn", num_bins: int = 20) -> Disentanglement:
    """MIG, SAP, DCI, the FactorVAE score and InfoMEC of ``codes`` ``(N, D_z)`` against ``factors`` ``(N, F)``.

    Args:
        codes: float, e.g. the guide's means (tensor or array).
        factors: discrete factor values or indices, one column per factor.
        names: the ``F`` factor names (default ``factor[k]``).
        seed: seeds every metric's random choices.
        importance: DCI's importance matrix (:func:`dci`). estimator: InfoMEC's mutual information (:func:`infomec`).
        num_bins: the discretisation of MIG.

    Raises:
        ValueError: bad shapes or values (see :func:`mig`), or ``names`` of the wrong length.
    """
    used = factors_used(factors)
    names = tuple(names) if names is not None else tuple(f"factor[{k}]" for k in range(len(used)))
    if len(names) != len(used):
        raise ValueError(f"names has {len(names)} entries for {len(used)} factors")
    found = {**mig(codes, factors, num_bins), **sap(codes, factors, seed), **dci(codes, factors, importance, seed),
             **factorvae_score(codes, factors, seed=seed), **infomec(codes, factors, estimator, num_bins, seed)}
    return Disentanglement({k: found[k] for k in METRICS}, {k: v for k, v in found.items() if k not in METRICS},
                           len(codes), tuple(n for n, u in zip(names, used) if u))


def guide_codes(ae: Autoencoder, *data: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """The guide's means of every latent site, side by side: ``(N, sum D)`` and the sites used.

    Sites whose means are not finite (a categorical site without an analytic mean) are left out.

    Raises:
        ValueError: no site with finite means.
    """
    from aezoo.diagnostics.latent import guide_means

    means = {n: m for n, m in guide_means(ae, *data).items() if torch.isfinite(m).all()}
    if not means:
        raise ValueError("the disentanglement metrics need a latent site whose guide means are finite")
    return torch.cat(list(means.values()), -1), list(means)


def evaluate(ae: Autoencoder, data: tuple, factors: torch.Tensor, names: tuple[str, ...] | None = None,
             max_points: int = 2000, seed: int = 0) -> Disentanglement:
    """:func:`disentanglement` of the guide's mean codes of the first ``max_points`` data.

    Args:
        ae: the autoencoder. data: ``(x, *covariates)`` in ``ae.covariates`` order.
        factors: ``(N, F)`` the data's factor indices. names: their names.

    Returns:
        :class:`Disentanglement` whose details also name the ``sites`` the codes came from.
    """
    n = min(len(data[0]), max_points)
    codes, sites = guide_codes(ae, *rows(data, slice(0, n)))
    result = disentanglement(codes, factors[:n], names, seed)
    result.details["sites"] = sites
    return result
