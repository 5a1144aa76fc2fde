"""Generated datasets: every sample made from data.seed's generator, nothing read from disk.

blobs and associative_recall classify, modular_addition is the grokking task, quadratic is linear regression with a
chosen Hessian spectrum (momentum in narrow valleys; rotate=false: axis-aligned, Adam's per-coordinate step), markov a
sequence task that needs the token two back, wilson the over-parameterized linear problem where adaptive methods
generalize worse (Wilson et al. 2017, section 3.3).
    x, y, meta = quadratic(dim=20, condition=100.0, num_samples=1000, val_samples=200, noise=0.0, rotate=True,
                           generator=g)
"""
import math

import torch

from trainlab.config import ConfigError


def blobs(num_samples, num_features, num_classes, difficulty, generator):
    centres = torch.randn(num_classes, num_features, generator=generator)
    centres *= 2.0 / torch.cdist(centres, centres).masked_fill(torch.eye(num_classes, dtype=torch.bool), 1e9).min()
    y = torch.randint(num_classes, (num_samples,), generator=generator)  # nearest centres are 2 apart
    x = centres[y] + difficulty * torch.randn(num_samples, num_features, generator=generator)
    return x, y, {"kind": "features", "num_classes": num_classes}


def modular_addition(p):
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).T
    x = torch.stack([a, b, torch.full_like(a, p)], dim=1)  # token p is "="
    return x, (a + b) % p, {"kind": "tokens", "vocab_size": p + 1, "num_classes": p}


def associative_recall(num_samples, num_pairs, num_keys, num_values, generator):
    """A lookup: num_pairs (key, value) tokens with distinct keys, then a query key; the label is its value.

    A pair is ONE token (key * num_values + value), the query token is num_keys * num_values + key. In the two-token
    form "k1 v1 k2 v2 ... q" the Transformer must first learn positions (to bind v to the k before it); it sat at
    the ~1/num_pairs plateau for 1500 steps here, while this form is learned in a few hundred.
    """
    if num_keys < num_pairs:
        raise ConfigError(f"data.num_keys={num_keys}: must be >= data.num_pairs={num_pairs} (keys are distinct)")
    keys = torch.rand(num_samples, num_keys, generator=generator).argsort(1)[:, :num_pairs]
    values = torch.randint(num_values, (num_samples, num_pairs), generator=generator)
    pick = torch.randint(num_pairs, (num_samples, 1), generator=generator)
    x = torch.cat([keys * num_values + values, num_keys * num_values + keys.gather(1, pick)], dim=1)
    return x, values.gather(1, pick).squeeze(1), {"kind": "tokens", "vocab_size": num_keys * (num_values + 1),
                                                  "num_classes": num_values}


def quadratic(dim, condition, num_samples, val_samples, noise, rotate, generator):
    """Linear regression y = x.w + noise whose loss 1/2 mean((x.w - y)^2) has the Hessian X^T X / N = Q diag(eig) Q^T
    EXACTLY on the training split: eig log-spaced from 1 to 1/condition, Q a random orthogonal basis (rotate=true) or
    the identity (rotate=false: feature i has variance eig[i], the Hessian is diagonal; the same samples, weights and
    noise expressed in the eigenbasis, so the two problems differ by a rotation only).

    The training features are sqrt(N) times orthonormal, zero-mean columns (so the bias direction decouples), the
    noise is one more such column (orthogonal to features and bias: the optimum stays w, its loss noise^2 / 2).
    w gives every eigen-direction the same expected share of the loss (y has unit variance): the flat directions
    matter. Validation samples are fresh draws from N(0, Q diag(eig) Q^T) with fresh noise.
    """
    if condition < 1:
        raise ConfigError(f"data.condition={condition}: must be a number >= 1 (the Hessian's largest / smallest "
                          "eigenvalue)")
    if num_samples < dim + 2:
        raise ConfigError(f"data.num_samples={num_samples}: must be >= data.dim + 2 = {dim + 2} (that many "
                          "training samples make an exact spectrum with zero-mean features and orthogonal noise)")
    if dim < 1 or val_samples < 1 or noise < 0:
        raise ConfigError(f"data.dim={dim}, data.val_samples={val_samples}, data.noise={noise}: need dim >= 1, "
                          "val_samples >= 1 and noise >= 0")
    f64 = torch.float64
    eig = torch.logspace(0, -math.log10(condition), dim, dtype=f64)  # 1 down to 1/condition
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=f64)).Q  # drawn either way: same stream
    if not rotate:
        basis = torch.eye(dim, dtype=f64)
    z = torch.randn(num_samples, dim + 1, generator=generator, dtype=f64)
    u = torch.linalg.qr(z - z.mean(0)).Q * math.sqrt(num_samples)  # u^T u / N = I, every column sums to 0
    x_train = (u[:, :dim] * eig.sqrt()) @ basis.T
    w = basis @ (torch.randn(dim, generator=generator, dtype=f64) / eig.sqrt()) / math.sqrt(dim)
    y_train = x_train @ w + noise * u[:, dim]
    x_val = (torch.randn(val_samples, dim, generator=generator, dtype=f64) * eig.sqrt()) @ basis.T
    y_val = x_val @ w + noise * torch.randn(val_samples, generator=generator, dtype=f64)
    return torch.cat([x_train, x_val]).float(), torch.cat([y_train, y_val]).float(), {
        "kind": "features", "task": "regress", "num_classes": 1, "num_val": val_samples,
        "optimal_loss": noise**2 / 2}


def wilson(num_samples, val_samples, positive, generator):
    """Wilson et al. 2017, section 3.3: labels +1 with probability `positive`, else -1 (classes 1 and 0 here); sample i
    has feature 0 = its label (+-1), features 1 and 2 = 1, and a block of 5 features of its own: the first is 1 for a
    positive sample, all five for a negative one. 3 + 5 * (num_samples + val_samples) features: more than samples.

    A linear model that fits the training set can use feature 0 (the minimum-norm solution that gradient descent from
    zero finds does: it generalizes) or the samples' own features (which a fresh sample does not share). Adaptive
    methods move every weight at a similar rate and lean on the own features and the constant ones: on fresh samples
    they predict the majority class. The features are kept at 0/1 (meta standardize=False): a shift of every zero
    would give every sample every other sample's features.
    """
    if not 0.5 < positive < 1:
        raise ConfigError(f"data.positive={positive}: must be a number in (0.5, 1) (the fraction of positive labels; "
                          "the construction needs a majority class)")
    n = num_samples + val_samples
    pos = torch.rand(n, generator=generator) < positive
    x = torch.zeros(n, 3 + 5 * n)
    x[:, 0] = pos.float() * 2 - 1
    x[:, 1:3] = 1.0
    start = 3 + 5 * torch.arange(n)
    x[torch.arange(n), start] = 1.0
    neg = torch.nonzero(~pos).squeeze(1)
    for k in range(1, 5):
        x[neg, start[neg] + k] = 1.0
    return x, pos.long(), {"kind": "features", "num_classes": 2, "num_val": val_samples, "standardize": False}


def markov_losses(transition, length):
    """Exact per-position losses (nats, averaged over the labels x_1..x_length) of sequences that start with two
    uniform tokens and continue x_t ~ transition[x_{t-2}]: (optimal, bigram, optimal at the last label).

    The optimum at label t is H(x_t | x_<t) = H(x_t | x_{t-2}) (the even and the odd positions are two independent
    chains), with x_1 uniform: log V. A model that sees only x_{t-1}, even one that knows t, gets H(x_t | x_{t-1})
    = H(x_t), the entropy of x_t's marginal (x_{t-1} is in the other chain).
    """
    v = len(transition)
    row_entropy = -(transition * transition.clamp_min(1e-300).log()).sum(1)
    marginal = [torch.full((v,), 1.0 / v, dtype=torch.float64)] * 2  # x_0 and x_1 are uniform
    for t in range(2, length + 1):
        marginal.append(marginal[t - 2] @ transition)
    optimal = [math.log(v)] + [(marginal[t - 2] @ row_entropy).item() for t in range(2, length + 1)]
    bigram = [math.log(v)] + [-(m * m.clamp_min(1e-300).log()).sum().item() for m in marginal[2:]]
    return sum(optimal) / length, sum(bigram) / length, optimal[-1]


def markov(num_samples, length, vocab, successors, generator):
    """Sequences of `length` + 1 tokens: two uniform ones, then token t uniform among the `successors` tokens that
    may follow token t-2 (a random set per token: each row of the transition matrix has entropy log(successors)).
    Inputs are the first `length` tokens, the labels the next token at every position (sequence data).
    """
    if length < 2 or vocab < 2 or not 1 <= successors <= vocab:
        raise ConfigError(f"data.length={length}, data.vocab={vocab}, data.successors={successors}: need length >= 2, "
                          "vocab >= 2 and 1 <= successors <= vocab")
    allowed = torch.rand(vocab, vocab, generator=generator).argsort(1)[:, :successors]  # tokens that may follow
    seq = torch.empty(num_samples, length + 1, dtype=torch.long)
    seq[:, :2] = torch.randint(vocab, (num_samples, 2), generator=generator)
    for t in range(2, length + 1):
        seq[:, t] = allowed[seq[:, t - 2], torch.randint(successors, (num_samples,), generator=generator)]
    transition = torch.zeros(vocab, vocab, dtype=torch.float64).scatter_(1, allowed, 1.0 / successors)
    optimal, bigram, last = markov_losses(transition, length)
    return seq[:, :-1], seq[:, 1:], {"kind": "tokens", "vocab_size": vocab, "num_classes": vocab, "sequence": True,
                                     "optimal_loss": optimal, "bigram_loss": bigram, "optimal_loss_last": last}
