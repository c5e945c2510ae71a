"""Evaluation of multimodal VAEs: subset and conditional log-likelihoods, coherence, conditional diversity.

For a model over modalities (``x``, ``x2``, ``y``) with a guide ``posterior(x, x2, y, present)``
and per-modality decoders ``modality_dist(m, z)`` (:mod:`aezoo.models.mvae`):

- **log-likelihoods**: log p(x_S) per datum for every non-empty subset ``S`` of modalities by
  importance sampling with the guide's q(z | x_S) (the absent ones masked out, which marginalises
  them exactly), and the conditionals log p(x_t | x_S) by self-normalised importance sampling
  with q(z | x_S) (:func:`conditional_log_likelihoods`) [2, 3];
- **coherence** [2, 3]: a generation is coherent when a digit classifier, trained once on MNIST
  (:func:`digit_classifier`), gives it the datum's class. Cross-modal: ``z ~ q(z | x_S)``, decode
  the target modality (the label as its most probable class). Joint: ``z ~ p(z)``, decode all
  three; coherent when the three classes agree;
- **diversity** of label-conditional generations (the critique of [5]: mixture-of-experts models
  disregard the variation of the many images behind one label): the mean pairwise Euclidean
  distance between decoded means of ``z ~ q(z | y = c)``, divided by the same distance between the
  decoded means of ``z ~ q(z | x)`` for real images ``x`` of class ``c``; 1 covers the class's
  variation as the model reconstructs it, near 0 is one prototype per class.

Daunhawer et al. [4] prove that mixture-based aggregations (MoE, MoPoE) trade generative
quality for coherence when the modalities carry modality-specific variation; the gap shows as a
lower log p(x) than the product of experts and a unimodal VAE of the same size
(``benchmarks/multimodal_mnist.py``).

References:
    1. Multimodal Generative Models for Scalable Weakly-Supervised Learning, Wu & Goodman,
       arXiv:1802.05335.
    2. Variational Mixture-of-Experts Autoencoders for Multi-Modal Deep Generative Models, Shi,
       Siddharth, Paige & Torr, arXiv:1911.03393.
    3. Generalized Multimodal ELBO, Sutter, Daunhawer & Vogt, arXiv:2105.02470.
    4. On the Limitations of Multimodal VAEs, Daunhawer, Sutter, Chin-Cheong, Palumbo & Vogt,
       arXiv:2110.04121.
    5. Mixture-of-experts VAEs can disregard variation in surjective multimodal data, Wolff,
       Kleijn, Sutter & Vogt, 2022.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from aezoo.core import Autoencoder, atomic_torch_save, load_checkpoint, rows, to_device
from aezoo.data import MNIST_SHA256, cache_dir
from aezoo.data.images import mnist_arrays
from aezoo.data.views import as_digits
from aezoo.diagnostics._traces import evaluating
from aezoo.diagnostics.likelihood import importance_estimate
from aezoo.models.mvae import MODALITIES
from aezoo.traces import trace_pair

CLASSIFIER_EPOCHS = 3


def _classifier_net() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def digit_classifier(epochs: int = CLASSIFIER_EPOCHS, seed: int = 0) -> nn.Module:
    """An MLP (784-256-10, ReLU) trained on the 60,000 MNIST training images (grey levels), cached.

    Trained once per MNIST file, ``epochs`` and ``seed`` (Adam, lr 1e-3, batch 128, seeded) and
    kept under :func:`aezoo.data.cache_dir`; about 98% accurate on the test images. Its attribute
    ``test_accuracy`` holds the measured accuracy on the 10,000 test images.

    Returns:
        the classifier in eval mode: ``(B, 784)`` grey levels in [0, 1] -> ``(B, 10)`` logits.
    """
    key = hashlib.sha256(f"{MNIST_SHA256}-{epochs}-{seed}-mlp256".encode()).hexdigest()[:12]
    path = cache_dir() / f"digit_classifier-{key}.pt"
    net = _classifier_net()
    xtr, ytr, xte, yte = (torch.as_tensor(a) for a in mnist_arrays())
    if path.exists():
        state = load_checkpoint(path)
        net.load_state_dict(state["net"])
    else:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            opt = torch.optim.Adam(net.parameters(), lr=1e-3)
            for _ in range(epochs):
                for idx in torch.randperm(len(xtr)).split(128):
                    loss = nn.functional.cross_entropy(net(xtr[idx]), ytr[idx].long())
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({"net": net.state_dict()}, path)
    net.eval()
    with torch.no_grad():
        net.test_accuracy = (net(xte).argmax(-1) == yte).double().mean().item()
    return net


def subset_name(members) -> str:
    """``"x,x2"`` for the modalities at the True entries of ``members``."""
    return ",".join(m for m, keep in zip(MODALITIES, members) if keep)


def all_subsets() -> list[tuple[bool, ...]]:
    """The non-empty subsets of :data:`MODALITIES` as bool tuples."""
    return [s for s in itertools.product((False, True), repeat=len(MODALITIES)) if any(s)]


def subset_log_likelihoods(ae: Autoencoder, x: Tensor, x2: Tensor, y: Tensor, num_particles: int = 1000,
                           batch_size: int = 100) -> dict[str, Tensor]:
    """log p(x_S) per datum ``(N,)`` for every non-empty subset ``S`` (key :func:`subset_name`), nats.

    Args:
        ae: a multimodal autoencoder (see the module docstring).
        x, x2, y: ``(N, D_x)``, ``(N, D_x2)``, ``(N,)``; every datum has every modality.
        num_particles: ``K`` importance samples from q(z | x_S).
    """
    out = {}
    for members in all_subsets():
        present = torch.tensor(members).expand(len(x), -1)
        est = importance_estimate(ae, x, x2, y, present, num_particles=num_particles, batch_size=batch_size)
        out[subset_name(members)] = est.log_likelihood
    return out


@torch.no_grad()
def conditional_log_likelihoods(ae: Autoencoder, x: Tensor, x2: Tensor, y: Tensor, num_particles: int = 1000,
                                max_elements: int = 2**22) -> dict[str, Tensor]:
    """log p(x_t | x_S) per datum ``(N,)`` for every target ``t`` and source subset ``S`` without it (key
    ``"t|S"``), nats, by self-normalised importance sampling with the source's guide:

    ``log sum_k w_k p(x_t | z_k) - log sum_k w_k``, ``z_k ~ q(z | x_S)``, ``w_k = p(x_S, z_k) / q(z_k | x_S)``,
    a consistent estimate of ``log E_{p(z | x_S)}[p(x_t | z)]`` whose numerator and denominator share
    their draws (a difference of two separate log p bounds would not cancel their slack).
    """
    values = ae.prepare(x, x2, y)[:3]
    chunk = max(1, max_elements // (num_particles * max(x.shape[-1], x2.shape[-1])))
    out = {}
    with evaluating(ae) as device:
        for members in all_subsets():
            if all(members):
                continue
            targets = [t for t in range(len(MODALITIES)) if not members[t]]
            parts = {t: [] for t in targets}
            for start in range(0, len(x), chunk):
                batch = to_device(rows(values, slice(start, start + chunk)), device)
                present = torch.tensor(members, device=device).expand(len(batch[0]), -1)
                tr = trace_pair(ae, *batch, present, num_particles=num_particles)
                model_sites = [n for n, s in tr.model.nodes.items() if s["type"] == "sample"]
                log_w = tr.log_prob(tr.model, model_sites) - tr.log_prob(tr.guide, tr.latent)  # (K, B)
                z = tr.guide.nodes["z"]["value"]
                for t in targets:
                    log_t = ae.model.modality_dist(t, z).log_prob(batch[t])  # (K, B)
                    parts[t].append(((log_w + log_t).logsumexp(0) - log_w.logsumexp(0)).cpu())
            for t in targets:
                out[f"{MODALITIES[t]}|{subset_name(members)}"] = torch.cat(parts[t])
    return out


def _label(ae: Autoencoder, classifier: nn.Module, m: int, z: Tensor) -> Tensor:
    """The class of modality ``m`` decoded at ``z``: the classifier's for images, the most probable for labels."""
    fn = ae.model.modality_dist(m, z)
    if MODALITIES[m] == "y":
        return fn.probs.argmax(-1)
    return classifier(as_digits(MODALITIES[m], fn.mean)).argmax(-1)


@dataclass
class MultimodalReport:
    """What :func:`evaluate` measured, means over the test data.

    Attributes:
        log_likelihood: subset name (``"x"``, ``"x,x2,y"``, ...) -> mean log p(x_S), nats per datum.
        conditional: ``"t|S"`` -> mean log p(x_t | x_S), nats per datum.
        coherence: ``"S->t"`` -> share of cross-modal generations of the datum's class; ``"joint"``: share
            of unconditional generations whose three modalities agree.
        diversity: ``"y->x"``, ``"y->x2"`` -> the diversity ratio of label-conditional generations.
        num_particles: ``K`` of the log-likelihoods; classifier_accuracy: the judge's MNIST test accuracy.
    """

    log_likelihood: dict[str, float]
    conditional: dict[str, float]
    coherence: dict[str, float]
    diversity: dict[str, float]
    num_particles: int
    classifier_accuracy: float

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def coherence(ae: Autoencoder, x: Tensor, x2: Tensor, y: Tensor, classifier: nn.Module) -> dict[str, float]:
    """Cross-modal coherence ``"S->t"`` for every source subset ``S`` and target ``t`` outside it, and the
    joint coherence of ``len(x)`` unconditional generations (see the module docstring)."""
    with evaluating(ae):
        out = {}
        for members in all_subsets():
            if all(members):
                continue
            q = ae.guide.posterior(*(v if keep else None for v, keep in zip((x, x2, y), members)))
            z = q.sample()
            for t, name in enumerate(MODALITIES):
                if not members[t]:
                    out[f"{subset_name(members)}->{name}"] = (_label(ae, classifier, t, z) == y).double().mean().item()
        z = torch.randn(len(x), ae.config.z_dim, dtype=x.dtype, device=x.device)
        first, *rest = (_label(ae, classifier, m, z) for m in range(len(MODALITIES)))
        out["joint"] = torch.stack([first == r for r in rest]).all(0).double().mean().item()
        return out


def pairwise_distance(images: Tensor) -> float:
    """Mean Euclidean distance over the distinct pairs of rows of ``images`` ``(n, D)``, n >= 2."""
    d = torch.cdist(images, images)
    n = len(images)
    return (d.sum() / (n * (n - 1))).item()


@torch.no_grad()
def diversity(ae: Autoencoder, x: Tensor, x2: Tensor, y: Tensor, per_class: int = 100) -> dict[str, float]:
    """Diversity ratio of label-conditional generations of each image modality, averaged over classes.

    Args:
        x, x2, y: test data; each class needs at least 2 members (``per_class`` are used at most).
    """
    with evaluating(ae):
        out = {}
        for t, target in ((0, x), (1, x2)):
            ratios = []
            for c in y.unique():
                real = target[y == c][:per_class]
                if len(real) < 2:
                    continue
                labels = torch.full((len(real),), int(c), dtype=y.dtype)
                from_label = ae.guide.posterior(None, None, labels).sample()
                from_image = ae.guide.posterior(*(real if i == t else None for i in range(2)), None).sample()
                means = [ae.model.modality_dist(t, z).mean for z in (from_label, from_image)]
                ratios.append(pairwise_distance(means[0]) / pairwise_distance(means[1]))
            out[f"y->{MODALITIES[t]}"] = sum(ratios) / len(ratios)
        return out


def evaluate(ae: Autoencoder, x: Tensor, x2: Tensor, y: Tensor, num_particles: int = 1000,
             classifier: nn.Module | None = None) -> MultimodalReport:
    """All of the module docstring's measures on test data ``(x, x2, y)`` (every modality present).

    Args:
        ae: a multimodal autoencoder on MNIST-sized images (the classifier reads 784 pixels).
        num_particles: ``K`` for the log-likelihoods.
        classifier: the judge; default :func:`digit_classifier`.
    """
    classifier = classifier or digit_classifier()
    x, x2, y = ae.prepare(x, x2, y)[:3]
    joint = subset_log_likelihoods(ae, x, x2, y, num_particles)
    return MultimodalReport(
        log_likelihood={k: v.mean().item() for k, v in joint.items()},
        conditional={k: v.mean().item() for k, v in conditional_log_likelihoods(ae, x, x2, y, num_particles).items()},
        coherence=coherence(ae, x, x2, y, classifier), diversity=diversity(ae, x, x2, y),
        num_particles=num_particles, classifier_accuracy=getattr(classifier, "test_accuracy", float("nan")))
