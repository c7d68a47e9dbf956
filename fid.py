"""
A report card for generated digits, with our MNIST classifier in place of the Inception
network: the Fréchet distance ("FID") that the later parts of the series quote, and the
metrics that tell *what kind* of failure a set of samples has.

    python fid.py                        # the reference table: what each metric sees
    python fid.py samples.npy            # the report card of generated digits vs the training set
    python fid.py samples/               # the same for a folder of PNG images
    python fid.py samples.npy --save-stats samples.npz   # also keep their mu and sigma

    from fid import score
    r = score(samples, checkpoint='out/classifier.pt')   # the same numbers as the command's card

The metrics, each with its paper and formula in its docstring: FID (Heusel et al. 2017),
KID (Bińkowski et al. 2018), precision and recall (Kynkäänniemi et al. 2019), density and
coverage (Naeem et al. 2020), copies of the training set (on the pixels), and the digits
the classifier sees.

Which features, and why (the one place that says it). Every metric but copies works on the
classifier's feature vector: the last convolution's output, pooled and flattened (128 for
the blog's network). The blog's "Evaluation" histograms it *before* the ReLU ("pre"): the
Fréchet distance assumes roughly normal features, and the ReLU clips the negative half. The
yardstick scores *after* it ("post", the linear layer's input) by default, as the series'
last post ("Latent Diffusion Model") does: its numbers land on that post's scale (validation
vs train: 0.28 here, 0.30 there) and vary less between trained classifiers (pre features
are ~10x larger, their FIDs 30-100x). --features pre scores with the blog's choice.

The same images score differently under different classifiers, so every report names its
yardstick: the classifier (the first 12 hex digits of its checkpoint's SHA-256), the
features and N on each side; --save-stats files (mu and sigma, as pytorch-fid's .npz) carry
it too. Compare numbers only under one yardstick.
"""

import argparse
import hashlib
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mnist import SHA256, cached, check_writable, load_mnist, pad, plot_tiles, read_file, reason, save_npz, seed_arg
from model import classifier_id, get_device, load_classifier

# -----------------------------------------------------------------------------
# the blog's path: images -> features -> mean and covariance -> the Fréchet distance

@torch.no_grad()
def embed(model, x, after_relu=True, batch_size=1000):
    """Features (N, D) and digit probabilities (N, 10), float32 on the CPU, of images
    x (N, 1, 32, 32) on any device, sent to the model's device a batch at a time."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    # on the CPU, convolutions are faster with each pixel's channels side by side in memory
    fast = device.type == 'cpu'
    if fast:
        model.to(memory_format=torch.channels_last)
    f, p = torch.empty(len(x), model.feature_size()), torch.empty(len(x), 10)   # (N, D), (N, 10)
    try:
        for i in range(0, len(x), batch_size):
            fb, logits = model.features_and_logits(x[i:i + batch_size].to(device), after_relu)
            f[i:i + batch_size] = fb.float().cpu()                    # (B, D), D = 128 for the blog's
            p[i:i + batch_size] = logits.float().softmax(1).cpu()     # (B, 10)
    finally:
        model.train(was_training)
        if fast:
            model.to(memory_format=torch.contiguous_format)
    return f, p

def mean_cov(f):
    """Mean (D,) and unbiased covariance (D, D) of features f (N, D), float64 numpy. The
    mean is subtracted before the product, so a large mean costs no precision."""
    f = torch.as_tensor(f).double()
    if len(f) < 2:
        raise ValueError(f'a covariance needs at least 2 images, got {len(f)}')
    mu = f.mean(0)                                                    # (D,)
    c = f - mu                                                        # (N, D) centred
    return mu.numpy(), (c.T @ c / (len(f) - 1)).numpy()               # like np.cov

def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64 (Heusel et al.
    2017, arXiv:1706.08500): d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrt(sigma1 sigma2)).
    Biased upwards for small sets: compare numbers at the same N (the series uses 10,000).
    sigma1 sigma2 has the eigenvalues of the symmetric PSD sqrt(sigma1) sigma2 sqrt(sigma1),
    so tr(sqrt(sigma1 sigma2)) is the sum of their square roots: unlike a general matrix
    square root (scipy's sqrtm, in pytorch-fid) never NaN or complex, also for singular sigmas.
    """
    mu1, sigma1 = check_gaussian(mu1, sigma1, 'mu1', 'sigma1')
    mu2, sigma2 = check_gaussian(mu2, sigma2, 'mu2', 'sigma2')
    if mu2.shape != mu1.shape:
        raise ValueError(f'mu2 has shape {mu2.shape}, expected {mu1.shape} (as mu1): features of another size')
    # sqrt(sigma1) from the eigendecomposition sigma1 = V diag(w) V^T
    w, V = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    sqrt1 = (V * np.sqrt(np.clip(w, 0, None))) @ V.T                 # (d, d)
    M = sqrt1 @ sigma2 @ sqrt1                                        # (d, d) symmetric PSD
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((M + M.T) / 2), 0, None)).sum()
    fd = ((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_sqrt
    return max(float(fd), 0.0)  # the true value is >= 0; clip rounding below it

# -----------------------------------------------------------------------------
# beyond the blog: the report card's other metrics. KID

KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000   # Bińkowski et al.'s defaults
KID_DIGIT_SUBSETS = 10  # per digit, fewer subsets: ten KIDs must fit the time budget

def mmd2_unbiased(x, y):
    """Unbiased MMD^2 of samples x (m, d) and y (n, d) with k(a, b) = (a.b / d + 1)^3 (Bińkowski
    et al. 2018, arXiv:1801.01401): the mean of k over pairs i != j within x, plus the same
    within y, minus twice the mean of k over all pairs across."""
    d, m, n = x.shape[1], len(x), len(y)
    k = lambda a, b: (a @ b.T).div_(d).add_(1).pow_(3)                # (len(a), len(b))
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
            + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1)) - 2 * kxy.mean()).item()

def kernel_inception_distance(f1, f2, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE, seed=0):
    """KID of features f1 (N1, D) and f2 (N2, D): (mean, standard deviation, subset size m)
    of mmd2_unbiased over `subsets` seeded random subsets of m = min(subset_size, N1, N2)
    rows a side. In float64: the pre features' kernel values reach 1e10, too much for float32."""
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise ValueError(f'KID needs at least 2 images on each side, got {len(f1)} and {len(f2)}')
    g = torch.Generator().manual_seed(seed)
    values = np.array([mmd2_unbiased(f1[torch.randperm(len(f1), generator=g)[:m]].double(),
                                     f2[torch.randperm(len(f2), generator=g)[:m]].double())
                       for _ in range(subsets)])
    return values.mean(), values.std(), m

# -----------------------------------------------------------------------------
# precision, recall, density and coverage

PRECISION_K = 3         # k of the k-NN balls of precision and recall (Kynkäänniemi et al.'s choice)
DENSITY_K = 5           # k of density and coverage (Naeem et al.'s choice)
MANIFOLD_N = 10_000     # those four metrics use at most this many images on each side

def squared_distances(a, b):
    """(len(a), len(b)) squared Euclidean distances, |a|^2 + |b|^2 - 2 a.b: one matmul."""
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T).clamp_(min=0)

def knn_radii2(f, k=PRECISION_K, block=500):
    """Squared distance from each row of f (N, D) to its k-th nearest other row: (N,). With
    k a tuple, one column per k, (N, len(k)), from a single pass over blocks of rows."""
    largest, columns = (max(k), list(k)) if isinstance(k, tuple) else (k, k)
    out = []
    for i in range(0, len(f), block):
        d2 = squared_distances(f[i:i + block], f)                     # (B, N): at most block x N
        nearest = d2.topk(largest + 1, dim=1, largest=False).values   # (B, largest + 1); [:, 0] is the row itself
        out.append(nearest[:, columns])                               # (B,) or (B, len(k))
    return torch.cat(out)

def manifold_metrics(f_gen, f_real, radii2_real=None, radii2_dc=None, block=500):
    """Precision, recall, density and coverage of features f_gen (N, D) against f_real (M, D),
    from k-NN balls: a point's ball reaches to its k-th nearest neighbour in its own set
    (radii2_*: the real balls' squared radii, when already known).
    - precision and recall (Kynkäänniemi et al. 2019, k = PRECISION_K): the share of generated
      rows inside the real balls (quality), and of real rows inside the generated balls (variety).
    - density and coverage (Naeem et al. 2020, k = DENSITY_K): density = 1/(k N) sum_j sum_i
      1[gen_j in ball_i], about 1 for real samples; coverage = the share of real balls that
      hold a sample. Both use only real balls, so outliers can't inflate them.
    """
    if min(len(f_gen), len(f_real)) < DENSITY_K + 1:
        raise ValueError(f'precision, recall, density and coverage need at least k + 1 = {DENSITY_K + 1} '
                         f'images on each side, got {len(f_gen)} and {len(f_real)}')
    if radii2_real is None:
        radii2_real, radii2_dc = knn_radii2(f_real, (PRECISION_K, DENSITY_K), block).unbind(1)   # (M,), (M,)
    radii2_gen = knn_radii2(f_gen, PRECISION_K, block)                       # (N,)
    gen_inside, balls_holding = 0, 0
    real_covered = torch.zeros(len(f_real), dtype=torch.bool)        # (M,) inside a generated ball
    real_hit = torch.zeros(len(f_real), dtype=torch.bool)            # (M,) its DC ball holds a sample
    for i in range(0, len(f_gen), block):
        d2 = squared_distances(f_gen[i:i + block], f_real)            # (B, M)
        gen_inside += (d2 <= radii2_real[None, :]).any(1).sum().item()   # in a real ball
        real_covered |= (d2 <= radii2_gen[i:i + block, None]).any(0)   # in a generated ball
        in_dc = d2 <= radii2_dc[None, :]                              # (B, M)
        balls_holding += torch.count_nonzero(in_dc).item()
        real_hit |= in_dc.any(0)
    N = len(f_gen)
    return (gen_inside / N, real_covered.double().mean().item(),
            balls_holding / (DENSITY_K * N), real_hit.double().mean().item())

# -----------------------------------------------------------------------------
# the digits

def digit_shares(pred):
    """(10,) the share of each predicted digit."""
    return torch.bincount(torch.as_tensor(pred), minlength=10).double() / len(pred)

def kl_divergence(p, q):
    """KL(p || q) of two distributions over the 10 digits; terms with p = 0 count 0."""
    p, q = torch.as_tensor(p).double(), torch.as_tensor(q).double()
    return (torch.special.xlogy(p, p) - torch.special.xlogy(p, q)).sum().item()

def classifier_score(probs):
    """The Inception Score of Salimans et al. 2016 (arXiv:1606.03498) with our classifier:
    exp(E_x KL(p(y|x) || p(y))), p(y) the mean of p(y|x) over the samples: 10 for
    confident predictions spread evenly over the digits, 1 for one digit (or no confidence)."""
    p = torch.as_tensor(probs).double()                               # (N, 10)
    kl = (torch.special.xlogy(p, p) - torch.special.xlogy(p, p.mean(0, keepdim=True))).sum(1)
    return kl.mean().exp().item()

# -----------------------------------------------------------------------------
# copies of the training set

COPY_DIMS = 32          # the coarse search compares 32 principal components of the pixels,
COPY_CANDIDATES = 8     # then re-checks the 8 nearest candidates on all 1,024 pixels
COPY_RATE = 0.01        # the share of the test digits that count as copies, by construction

def recentre(x):
    """Move each image x (N, 32, 32) by whole pixels so that its centre of mass lands on
    pixel (16, 16), where MNIST's makers centred every digit: a shifted copy is moved back."""
    N, H, W = x.shape
    r = torch.arange(H, dtype=x.dtype)                                # (32,) pixel coordinates
    mass = x.sum((1, 2)).clamp(min=1e-12)                             # (N,) 0 for a blank image
    cy, cx = (x.sum(2) * r).sum(1) / mass, (x.sum(1) * r).sum(1) / mass   # (N,) centres of mass
    dy, dx = torch.floor(H / 2 - cy + 0.5).long(), torch.floor(W / 2 - cx + 0.5).long()   # (N,)
    # row i of the result is row i - dy of the image (wrapping round: the margins are blank)
    rows = (torch.arange(H) - dy[:, None]) % H                        # (N, 32)
    cols = (torch.arange(W) - dx[:, None]) % W                        # (N, 32)
    x = x.gather(1, rows[:, :, None].expand(N, H, W))
    return x.gather(2, cols[:, None, :].expand(N, H, W))

def nearest_two(x, copy_ref, block=250, chunk=4096):
    """For images x (N, 1, 32, 32): the distance ratio d1 / d2 (N,) of each image's nearest and
    second-nearest re-centred training digit, d1 (N,) and the index j (N,) of the nearest.
    A coarse search on COPY_DIMS principal components finds COPY_CANDIDATES candidates (a
    projection never lengthens a distance, so a copy's original is among them), then the
    exact distances on all pixels pick among those."""
    z, zz = copy_ref['z'], (copy_ref['z'] ** 2).sum(1)                # (M, D), (M,)
    K = min(COPY_CANDIDATES, len(z))
    ratio, d1, j = torch.empty(len(x)), torch.empty(len(x)), torch.empty(len(x), dtype=torch.long)   # (N,) each
    for i in range(0, len(x), block):
        xb = recentre(x[i:i + block, 0].float()).flatten(1)           # (B, 1024)
        zb = (xb - copy_ref['mean']) @ copy_ref['axes']               # (B, D)
        # the coarse search, chunk by chunk of training digits: the K nearest of each, then of all
        vals, idx = [], []
        for m in range(0, len(z), chunk):
            coarse = torch.addmm(zz[None, m:m + chunk], zb, z[m:m + chunk].T, alpha=-2)   # (B, chunk) |zb - z|^2 - |zb|^2
            v, c = coarse.topk(min(K, coarse.shape[1]), 1, largest=False)
            vals.append(v)
            idx.append(c + m)
        vals, idx = torch.cat(vals, 1), torch.cat(idx, 1)             # (B, K x chunks)
        cand = idx.gather(1, vals.topk(K, 1, largest=False).indices)  # (B, K) the K nearest of all
        t = copy_ref['train'][cand].float() / 255                     # (B, K, 1024)
        exact, order = ((t - xb[:, None, :]) ** 2).sum(2).sqrt().sort(1)   # (B, K) ascending
        d1[i:i + block] = exact[:, 0]
        ratio[i:i + block] = torch.where(exact[:, 1] > 0, exact[:, 0] / exact[:, 1], 0.0)   # 0/0: a copy
        j[i:i + block] = cand.gather(1, order[:, :1])[:, 0]
    return ratio, d1, j

def copy_reference(x_train, x_val):
    """What the copy search needs from training digits x_train (M, 1, 32, 32): the
    re-centred digits as uint8 (M, 1024) (exact: MNIST pixels are multiples of 1/255), the
    mean and the first COPY_DIMS principal axes of their pixels, each digit's coordinates on
    those axes; and tau, the ratio at or below which COPY_RATE of the test digits x_val fall."""
    t = recentre(x_train[:, 0]).flatten(1)                            # (M, 1024)
    mean = t.mean(0)                                                  # (1024,)
    c = (t - mean).double()
    axes = torch.linalg.eigh(c.T @ c / len(t))[1][:, -COPY_DIMS:].flip(1).float()   # (1024, D) largest first
    copy_ref = {'train': (t * 255).round().to(torch.uint8), 'mean': mean, 'axes': axes, 'z': (t - mean) @ axes}
    ratio = nearest_two(x_val, copy_ref)[0].sort().values             # (N_val,)
    copy_ref['tau'] = ratio[math.ceil(COPY_RATE * len(ratio)) - 1].item()
    return copy_ref

def copies(x, copy_ref):
    """The share of images x (N, 1, 32, 32) that copy a training digit, and per image the
    distance ratio, the distance to the nearest training digit and that digit's index.
    A copy has one training digit very close and then only ordinary ones, so the ratio of its
    distances to the nearest and second-nearest training digit is small: Lowe's ratio test
    (2004), close to the authenticity of Alaa et al. 2022 (arXiv:2102.08921). On re-centred pixels,
    not features: in features, a copy moved by one pixel is no nearer its original than a new
    digit is. Calibrated so that the test digits, new digits, score COPY_RATE = 1%.
    """
    ratio, d1, j = nearest_two(x, copy_ref)
    return (ratio <= copy_ref['tau']).double().mean().item(), {'copy_ratio': ratio, 'copy_distance': d1,
                                                            'nearest_train': j}

# -----------------------------------------------------------------------------
# the report card: reference() builds the real side, report() scores images against it, print_report()
# prints; train_reference() (cached, below) is the training set's real side, copy search included

REFERENCE_N = 10_000    # the N the series' numbers are quoted at
PRESENT = 0.01          # a digit is present when at least 1% of the samples are that digit
SERIES_FID = {'validation set vs train': '0.30', 'Gaussian noise vs train': '48.43'}   # its final post's

def reference(f, pred, seed=0, mu=None, sigma=None, radii2=None, radii2_dc=None):
    """The real side a report compares with, from its features f (M, D) and predicted digits
    (M,): their statistics, and a seeded random subset of at most MANIFOLD_N rows with its
    squared k-NN radii (radii2: k = PRECISION_K; radii2_dc: k = DENSITY_K, for density and
    coverage). Parts already known (cached) are passed in."""
    if mu is None:
        mu, sigma = mean_cov(f)
    pr_idx = torch.randperm(len(f), generator=torch.Generator().manual_seed(seed))[:MANIFOLD_N]
    if radii2 is None and len(pr_idx) > DENSITY_K:  # with k or fewer there are no k-th neighbours
        radii2, radii2_dc = knn_radii2(f[pr_idx], (PRECISION_K, DENSITY_K)).unbind(1)   # one pass, (M,) each
    return dict(f=f, pred=pred, mu=mu, sigma=sigma, pr_idx=pr_idx, radii2=radii2, radii2_dc=radii2_dc)

def report_from_features(f, probs, ref, seed=0):
    """Every metric of generated features f (N, D) and probabilities (N, 10) against a
    reference(); returns a dict, with 'warnings' for numbers from too few images."""
    N, M = len(f), len(ref['f'])
    r = {'n': N, 'n_real': M, 'warnings': []}
    if N < f.shape[1]:
        r['warnings'].append(f'only {N} images, fewer than the {f.shape[1]} features: the covariance is '
                             f'rank-deficient and the FID biased upwards; compare FIDs at {REFERENCE_N:,}')
    r['mu'], r['sigma'] = mean_cov(f)                                 # (D,), (D, D): for --save-stats too
    r['fid'] = frechet_distance(r['mu'], r['sigma'], ref['mu'], ref['sigma'])
    r['kid'], r['kid_std'], r['kid_subset'] = kernel_inception_distance(f, ref['f'], seed=seed)
    if r['kid_subset'] < KID_SUBSET_SIZE:
        r['warnings'].append(f'KID on subsets of {r["kid_subset"]}, not {KID_SUBSET_SIZE}: noisier')
    # precision, recall, density and coverage on at most MANIFOLD_N samples a side: the k-NN
    # radii shrink as a set grows, so the numbers compare only at the same N
    f_pr = f[torch.randperm(N, generator=torch.Generator().manual_seed(seed))[:MANIFOLD_N]]
    r['pr_n'], r['pr_n_real'] = len(f_pr), len(ref['pr_idx'])
    keys = ('precision', 'recall', 'density', 'coverage')
    if min(len(f_pr), len(ref['pr_idx'])) > DENSITY_K:
        r.update(zip(keys, manifold_metrics(f_pr, ref['f'][ref['pr_idx']], ref['radii2'], ref['radii2_dc'])))
    else:
        r.update(dict.fromkeys(keys, float('nan')))
        r['warnings'].append(f'precision, recall, density and coverage need at least {DENSITY_K + 1} images on each side')
    # the digits: which ones, how sure, and KID within each digit
    pred = probs.argmax(1)                                            # (N,) the predicted digits
    shares, real_shares = digit_shares(pred), digit_shares(ref['pred'])  # (10,), (10,)
    r['classifier_score'] = classifier_score(probs)
    r['per_sample'] = {'pred': pred, 'confidence': probs.max(1).values}   # (N,) each
    r['confidence'] = r['per_sample']['confidence'].double().mean().item()
    r['digits_present'] = int((shares >= PRESENT).sum())
    r['digit_kl'] = kl_divergence(shares, real_shares)
    r['digits'] = []
    for d in range(10):
        fg, fr = f[pred == d], ref['f'][ref['pred'] == d]
        kid = kernel_inception_distance(fg, fr, KID_DIGIT_SUBSETS, seed=seed)[0] if min(len(fg), len(fr)) >= 2 else float('nan')
        r['digits'].append({'digit': d, 'n': len(fg), 'share': shares[d].item(), 'real_share': real_shares[d].item(),
                            'confidence': probs[pred == d].max(1).values.double().mean().item() if len(fg) else float('nan'),
                            'kid': kid})
    return r

def report(model, x, ref, after_relu=True, batch_size=1000, seed=0, classifier=None, checked=False):
    """The report card of images x (any shape to_model_input takes) against a reference() of real
    images: a dict of every metric, per-sample results and the yardstick; copies too when ref['copy']
    holds a copy search (train_reference's does). checked=True skips to_model_input: for load_images'
    output, and for the reference table's unclipped noise, which it would refuse."""
    t0 = time.perf_counter()
    x = x if checked else to_model_input(x, 'the generated images')   # (N, 1, 32, 32)
    f, probs = embed(model, x, after_relu, batch_size)                # (N, D), (N, 10)
    r = report_from_features(f, probs, ref, seed)
    r['copies'], r['copy_tau'] = None, None
    if ref.get('copy') is not None:
        r['copies'], per_sample = copies(x, ref['copy'])
        r['per_sample'].update(per_sample)
        r['copy_tau'] = ref['copy']['tau']
    r.update(classifier=classifier, features='post' if after_relu else 'pre', seconds=time.perf_counter() - t0)
    return r

def score(images, checkpoint='out/classifier.pt', features='post', data_dir='data', out_dir='out',
          device='auto', seed=0, batch_size=1000):
    """The report card of generated digits (numpy or torch) against the 60,000 training
    digits, in one call: report()'s dict, the same numbers as `python fid.py samples.npy`.
    The training side is cached in out_dir (built the first time)."""
    model, _ = load_classifier(checkpoint, get_device(device))
    after_relu = {'post': True, 'pre': False}[features]
    ref = train_reference(model, checkpoint, data_dir, out_dir, after_relu, seed, batch_size)
    return report(model, images, ref, after_relu, batch_size, seed, classifier_id(checkpoint))

def print_report(r, name, real_name):
    final = SERIES_FID['validation set vs train'] if r['features'] == 'post' else None
    print(f'\nreport card: {name} ({r["n"]:,} images) vs {real_name} ({r["n_real"]:,} images)')
    print(f'  FID               {r["fid"]:10.4f}   distance between the feature Gaussians'
          + (f' (real vs real at 10,000: about {final} with the blog\'s network)' if final else ''))
    print(f'  KID               {r["kid"]:10.4g}   +- {r["kid_std"]:.4g} over {KID_SUBSETS} subsets of '
          f'{r["kid_subset"]:,}; unbiased: 0 for the same distribution')
    print(f'  precision         {r["precision"]:10.3f}   share of samples inside the real manifold: quality')
    print(f'  recall            {r["recall"]:10.3f}   share of real digits inside the samples\' manifold: variety')
    print(f'  density           {r["density"]:10.3f}   real {DENSITY_K}-NN balls holding a sample, on average, / {DENSITY_K}: '
          f'about 1 for real digits')
    print(f'  coverage          {r["coverage"]:10.3f}   share of real {DENSITY_K}-NN balls holding a sample: variety, '
          f'outliers ignored')
    if r['copies'] is None:
        print('  copies                   n/a   (this real side has no copy search; train_reference() adds one)')
    else:
        print(f'  copies            {r["copies"]:10.1%}   samples nearer a training digit than {COPY_RATE:.0%} '
              f'of the test digits are (nearest / second-nearest distance <= {r["copy_tau"]:.3f})')
    print(f'  classifier score  {r["classifier_score"]:10.2f}   of 10: confident and varied digits')
    print(f'  digits present    {r["digits_present"]:7d}/10   (at least {PRESENT:.0%} of the samples each) | '
          f'digit mix KL {r["digit_kl"]:.4f} | mean confidence {r["confidence"]:.3f}')
    print('\n  digit |  share | real share | confidence | KID')
    for d in r['digits']:
        print(f'  {d["digit"]:5d} | {d["share"]:6.1%} | {d["real_share"]:10.1%} | '
              f'{d["confidence"]:10.3f} | {d["kid"]:.4g}')
    print(f'\nyardstick: classifier {r["classifier"]} | features {r["features"]} ({len(r["mu"])}) | N {r["n"]:,} vs '
          f'{r["n_real"]:,} (KID subsets of {r["kid_subset"]:,}; precision/recall {r["pr_n"]:,} vs '
          f'{r["pr_n_real"]:,}, k = {PRECISION_K}; density/coverage k = {DENSITY_K})')
    for w in r['warnings']:
        print(f'warning: {w}', file=sys.stderr)

# -----------------------------------------------------------------------------
# the report card's figure: the most copy-like samples beside their originals

def plot_copies(x, r, copy_ref, path, n=24, per_row=4):
    """The n most copy-like samples (smallest distance ratio first), each re-centred beside
    the training digit nearest to it, labelled with the ratio and the distance."""
    s = r['per_sample']
    order = s['copy_ratio'].argsort()[:n]                             # (n,) most copy-like first
    pairs = torch.stack([recentre(x[order, 0]), copy_ref['train'][s['nearest_train'][order]].view(-1, 32, 32) / 255], 1)
    tiles = np.full((math.ceil(n / per_row) * per_row, 2, 32, 32), np.nan)   # NaN tiles stay white
    tiles[:len(order)] = pairs.numpy()                                # (n, 2, 32, 32)
    labels = [[f'r {s["copy_ratio"][i]:.2f}', f'd {s["copy_distance"][i]:.1f}'] for i in order.tolist()]
    labels += [['', '']] * (len(tiles) - len(order))
    rows = len(tiles) // per_row
    plot_tiles(tiles.reshape(rows, 2 * per_row, 32, 32), path,
               f'{r["copies"]:.1%} copies: the most copy-like samples beside their nearest training digit '
               f'(r = nearest / second-nearest distance, a copy at r <= {r["copy_tau"]:.3f}; d = distance)',
               col_labels=['sample', 'train'] * per_row,
               tile_labels=[sum(labels[k * per_row:(k + 1) * per_row], []) for k in range(rows)], inches=0.9)

# -----------------------------------------------------------------------------
# the reference table of `python fid.py`: what each metric sees

def corrupt(x, sigma, g):
    """Add N(0, sigma^2) noise to the 28x28 digit inside each 32x32 image, clip to [0, 1]."""
    x = x.clone()
    x[..., 2:30, 2:30] = (x[..., 2:30, 2:30] + sigma * torch.randn(x[..., 2:30, 2:30].shape, generator=g)).clamp(0, 1)
    return x

def blur(x):
    """A 3x3 box filter over each image (N, 1, 32, 32): the soft strokes of a weak decoder."""
    return torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)

def reference_table(model, ref, x_train, x_val, y_val, args, classifier):
    """Print the report of sets of images whose failure we know against the training set,
    one row each, so that a reader sees what each metric responds to."""
    g = torch.Generator().manual_seed(args.seed)
    after_relu = args.features == 'post'
    # pure noise with the mean and standard deviation of the training digits' pixels
    digits = x_train[..., 2:30, 2:30]                                 # (60000, 1, 28, 28) unpadded
    noise = pad(digits.mean() + digits.std() * torch.randn(len(x_val), 1, 28, 28, generator=g))
    # a memoriser: as many random training digits as there are test digits, returned as they
    # are, moved one pixel to the right, or half of them mixed with half of the test digits
    copied = x_train[torch.randperm(len(x_train), generator=g)[:len(x_val)]]   # (N_val, 1, 32, 32)
    half = len(x_val) // 2
    rows = [('validation set vs train', x_val),
            ('validation digits 0-4 only', x_val[y_val < 5]),
            ('validation blurred (3x3 box)', blur(x_val)),
            ('validation + noise sigma 0.1', corrupt(x_val, 0.1, g)),
            ('validation + noise sigma 0.5', corrupt(x_val, 0.5, g)),
            ('Gaussian noise vs train', noise),
            ('training digits, copied', copied),
            ('training digits moved 1 pixel', copied.roll(1, dims=3)),
            ('half copies, half validation', torch.cat([copied[:half], x_val[half:]]))]
    print(f'\n| compared ({args.features} features) | N | FID | final post | KID | precision | recall | density '
          f'| coverage | copies | classifier score | digits present | digit mix KL |\n|{"---|" * 13}')
    results = {}
    for name, x in rows:
        r = results[name] = report(model, x, ref, after_relu, args.batch_size, args.seed, classifier, checked=True)
        post = SERIES_FID.get(name, '') if after_relu else 'n/a'
        print(f'| {name} | {r["n"]:,} | {r["fid"]:.2f} | {post} | {r["kid"]:.4g} | {r["precision"]:.3f} | '
              f'{r["recall"]:.3f} | {r["density"]:.3f} | {r["coverage"]:.3f} | {r["copies"]:.1%} | '
              f'{r["classifier_score"]:.2f} | {r["digits_present"]} | {r["digit_kl"]:.3f} |', flush=True)
    print(f'\nyardstick: classifier {classifier} | features {args.features} ({len(ref["mu"])}) | N as in each row vs '
          f'{len(ref["f"]):,} training images')
    return results

# -----------------------------------------------------------------------------
# the command

def main(argv=None):
    parser = argparse.ArgumentParser(description='A report card for generated MNIST digits: FID, KID, '
                                     'precision, recall and the digits, with our classifier.',
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('images', nargs='?', metavar='IMAGES',
                        help='generated digits (.npy, .pt or a folder of PNGs) to score against the training '
                             'set; without it, the reference table')
    parser.add_argument('--features', choices=['pre', 'post'], default='post',
                        help="the features after the last ReLU (the series' scale) or before it (the blog's)")
    parser.add_argument('--save-stats', metavar='NPZ', help='also write mu and sigma of the images to this .npz')
    parser.add_argument('--checkpoint', default='out/classifier.pt', help='checkpoint written by train.py')
    parser.add_argument('--data-dir', default='data', help='folder with (or for) the four MNIST IDX files')
    parser.add_argument('--out-dir', default='out', help='folder for the cached training features and the figures')
    parser.add_argument('--batch-size', type=int, default=1000, help='images per forward pass')
    parser.add_argument('--seed', type=seed_arg, default=0, help='seed for the random subsets and the noise')
    parser.add_argument('--device', default='auto', help='auto (cuda, then mps, then cpu), or any torch device')
    args = parser.parse_args(argv)
    if args.save_stats and not args.images:
        parser.error('--save-stats needs images')
    if args.save_stats and Path(args.save_stats).suffix != '.npz':   # so never the images (.npy, .pt, PNGs)
        parser.error(f'--save-stats {args.save_stats}: statistics files end in .npz')
    if args.batch_size < 1:
        parser.error(f'--batch-size must be at least 1, got {args.batch_size}')
    try:
        args.device = get_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    after_relu = args.features == 'post'
    print(vars(args))
    try:
        for folder in {Path(args.out_dir), *([Path(args.save_stats).parent] if args.save_stats else [])}:
            check_writable(folder)                                    # before any work
        model, _ = load_classifier(args.checkpoint, args.device)    # refused if model.py changed since
        cid = classifier_id(args.checkpoint)
        print(f'classifier {cid} ({args.checkpoint}): {model.summary()}')
        x = load_images(args.images) if args.images else None        # (N, 1, 32, 32), checked first
        ref = train_reference(model, args.checkpoint, args.data_dir, args.out_dir, after_relu, args.seed,
                              args.batch_size)
        if x is None:
            x_train, _, x_val, y_val = load_mnist(args.data_dir)
            reference_table(model, ref, x_train[:, None], x_val[:, None], y_val, args, cid)
            return
        # the report card against the training set, as score() computes it
        r = report(model, x, ref, after_relu, args.batch_size, args.seed, classifier=cid, checked=True)
        print_report(r, args.images, 'MNIST train')
        print(f'scored in {r["seconds"]:.2f} s on {args.device}')
        path = Path(args.out_dir) / f'{Path(args.images).stem or "samples"}_copies.png'
        plot_copies(x, r, ref['copy'], path)
        print(f'wrote {path}')
        if args.save_stats:
            replaced = Path(args.save_stats).exists()
            save_npz(args.save_stats, mu=r['mu'], sigma=r['sigma'], classifier=cid, features=args.features, n=r['n'])
            print(f'wrote {args.save_stats}' + (' (it replaced the file that was there)' if replaced else ''))
    except (FileNotFoundError, ValueError) as e:
        parser.exit(1, f'error: {e}\n')
    except KeyboardInterrupt:
        parser.exit(130, '\ninterrupted: nothing half-written was left behind\n')

# -----------------------------------------------------------------------------
# plumbing: a first reading can skip the rest of this file.
# Checks of a Gaussian's parameters

def check_gaussian(mu, sigma, mu_name='mu', sigma_name='sigma'):
    """mu (D,) and sigma (D, D) as float64 arrays, checked to describe a normal distribution:
    finite, sigma symmetric and positive semi-definite (up to rounding); else one ValueError."""
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    d = mu.shape[0] if mu.ndim == 1 else -1
    for name, a, shape in ((mu_name, mu, (d,)), (sigma_name, sigma, (d, d))):
        if a.shape != shape:
            raise ValueError(f'{name} has shape {a.shape}, expected {shape} ({mu_name} has shape {mu.shape})')
        if not np.isfinite(a).all():
            raise ValueError(f'{name} has NaN or infinite entries')
    if not np.allclose(sigma, sigma.T, rtol=1e-6, atol=1e-9 * max(np.abs(sigma).max(), 1e-300)):
        raise ValueError(f'{sigma_name} is not symmetric, so it is not a covariance matrix')
    w = np.linalg.eigvalsh((sigma + sigma.T) / 2)                      # (D,) ascending
    if d and w[0] < -1e-6 * max(np.abs(w).max(), 1e-300):
        raise ValueError(f'{sigma_name} is not positive semi-definite (an eigenvalue of {w[0]:.4g}), '
                         f'so it is not a covariance matrix')
    return mu, sigma

# -----------------------------------------------------------------------------
# generated digits: the images this file scores, from every shape generators write them in,
# brought to the shape and range load_mnist gives

def to_model_input(x, name):
    """Check generated digits and shape them as the classifier expects: (N, 1, 32, 32) float32.
    Takes (N, 28, 28) or (N, 32, 32), channel first or last, or flat; floats in [0, 1] (a generator's
    rounding within 1e-6 is clipped) or uint8 0-255; else one ValueError naming the input."""
    if isinstance(x, np.ndarray) and x.dtype.kind not in 'uf':       # strings, dates, records, objects
        raise ValueError(f'{name}: expected images of numbers (uint8 or float), got numpy dtype {x.dtype}')
    if torch.is_tensor(x) and x.layout != torch.strided:
        raise ValueError(f'{name}: a {x.layout} tensor; expected a dense one (x.to_dense())')
    x = torch.as_tensor(x)
    shapes = '(N, 28, 28) or (N, 32, 32), also as (N, 1, H, W), (N, H, W, 1), (N, 784) or (N, 1024)'
    if x.ndim == 2 and x.shape[1] in (784, 1024):
        x = x.reshape(len(x), *((28, 28) if x.shape[1] == 784 else (32, 32)))   # (N, H, W)
    elif x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]                                                   # (N, H, W)
    elif x.ndim == 4 and x.shape[3] == 1:
        x = x[..., 0]                                                 # channels last
    if x.ndim != 3 or tuple(x.shape[1:]) not in ((28, 28), (32, 32)):
        raise ValueError(f'{name}: expected grayscale images of shape {shapes}, got {tuple(x.shape)}')
    if x.is_floating_point():
        # min and max are NaN when any value is, and need no temporary as large as x
        lo, hi = (x.min().item(), x.max().item()) if x.numel() else (0, 0)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f'{name}: {int((~torch.isfinite(x)).sum())} values are NaN or infinite')
        if lo < -1e-6 or hi > 1 + 1e-6:
            hint = ('they look like [-1, 1], the usual output range of diffusion models: map them with '
                    '(x + 1) / 2' if lo <= -0.5 and hi <= 1 + 1e-6 else 'divide uint8 values by 255, or clip')
            raise ValueError(f'{name}: float images must lie in [0, 1], found values from {lo:.9g} '
                             f'to {hi:.9g}: {hint}')
    elif x.dtype != torch.uint8:
        raise ValueError(f'{name}: expected float images in [0, 1] or uint8 in 0-255, got {x.dtype}')
    if len(x) < 2:
        raise ValueError(f'{name}: the metrics need at least 2 images, got {len(x)}')
    # images already in the classifier's form are used as they are, not copied
    if x.dtype == torch.float32 and x.shape[1] == 32 and lo >= 0 and hi <= 1:
        return x[:, None]                                             # (N, 1, 32, 32), shares x's memory
    # else into one new float32 array; 28x28 digits get mnist.py's 2-pixel border of zeros
    out = torch.zeros(len(x), 1, 32, 32)                              # (N, 1, 32, 32)
    o = (32 - x.shape[1]) // 2                                        # 2 for 28x28, 0 for 32x32
    out[:, 0, o:32 - o, o:32 - o] = x
    return out.div_(255) if x.dtype == torch.uint8 else out.clamp_(0, 1)

def read_png_folder(folder):
    """The *.png images of a folder, by name (pytorch-fid's convention): (N, H, W) float32 in [0, 1].
    Grayscale, or RGB/RGBA with equal colour channels and no transparency."""
    from matplotlib.image import imread
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() == '.png')
    if not files:
        raise ValueError(f'{folder}: no .png images in this folder')
    images = []
    for p in files:
        try:
            a = np.asarray(imread(p), dtype=np.float32)               # (H, W) or (H, W, 2-4) in [0, 1]
        except Exception as e:
            raise ValueError(f'{p}: not a readable PNG image ({reason(e)})') from None
        if a.ndim == 3:                   # (H, W, C): RGB (3) or RGBA (4; gray + alpha comes as RGBA too)
            colour, alpha = a[..., :3], a[..., 3:]                    # alpha (H, W, 0 or 1)
            if (alpha < 1).any() or (colour != colour[..., :1]).any():
                raise ValueError(f'{p}: a colour image or transparent pixels; expected opaque grayscale digits')
            a = colour[..., 0]
        if images and a.shape != images[0].shape:
            raise ValueError(f'{folder}: images of mixed sizes: {files[0].name} is {images[0].shape[1]}x'
                             f'{images[0].shape[0]}, {p.name} is {a.shape[1]}x{a.shape[0]}')
        images.append(a)
    return np.stack(images)

def load_images(path):
    """Generated digits from a .npy or .pt file or a folder of PNGs, checked, as (N, 1, 32, 32)."""
    path = Path(path)
    if path.is_dir():
        return to_model_input(read_png_folder(path), path)
    if not path.is_file():
        raise FileNotFoundError(f'{path}: no such file or folder')
    if path.suffix == '.npy':
        x = read_file(path, lambda p: np.load(p, allow_pickle=False),
                      'a readable .npy array: empty, cut short or not numpy')
        if not isinstance(x, np.ndarray):
            x.close()                                                 # an .npz archive, opened lazily
            raise ValueError(f'{path}: expected one array of images, got an archive of {len(x.files)} arrays (.npz)')
    elif path.suffix == '.pt':
        x = read_file(path, lambda p: torch.load(p, map_location='cpu', weights_only=True), 'a readable .pt file')
        if not isinstance(x, torch.Tensor):
            raise ValueError(f'{path}: expected one tensor of images, got {type(x).__name__}')
    else:
        raise ValueError(f'{path}: expected a .npy or .pt file of images, or a folder of PNGs')
    return to_model_input(x, path)

# -----------------------------------------------------------------------------
# the caches in out/: the training side, computed once; bump a version when what it holds changes

REFERENCE_VERSION = 3   # the training features
COPIES_VERSION = 2      # the copy search's pixels and tau
DATA_ID = hashlib.sha256((SHA256['train-images-idx3-ubyte'] + SHA256['t10k-images-idx3-ubyte']).encode()).hexdigest()[:12]

def train_reference(model, checkpoint, data_dir='data', out_dir='out', after_relu=True, seed=0, batch_size=1000):
    """reference() of the 60,000 training images, cached in out_dir/train_reference_{post,pre}.npz
    and recomputed when the checkpoint's bytes (its classifier_id) or the settings change, with
    the copy search of train_copy_reference() as 'copy'."""
    features = 'post' if after_relu else 'pre'
    def build():
        x_train = load_mnist(data_dir)[0][:, None]                    # (60000, 1, 32, 32)
        f, probs = embed(model, x_train, after_relu, batch_size)      # (60000, D), (60000, 10)
        ref = reference(f, probs.argmax(1), seed)
        return {'f': f.numpy(), 'pred': ref['pred'].numpy().astype(np.uint8), 'mu': ref['mu'], 'sigma': ref['sigma'],
                'radii2': ref['radii2'].numpy(), 'radii2_dc': ref['radii2_dc'].numpy(), 'n': len(f)}
    z = cached(Path(out_dir) / f'train_reference_{features}.npz', build, classifier=classifier_id(checkpoint),
               features=features, seed=seed, data=DATA_ID, version=REFERENCE_VERSION)
    ref = reference(torch.from_numpy(z['f']), torch.from_numpy(z['pred']).long(), seed, z['mu'], z['sigma'],
                    torch.from_numpy(z['radii2']), torch.from_numpy(z['radii2_dc']))
    return {**ref, 'copy': train_copy_reference(data_dir, out_dir)}

def train_copy_reference(data_dir='data', out_dir='out'):
    """copy_reference() of the training digits, calibrated on the test digits, cached in
    out_dir/train_copies.npz; pixels only, so it does not depend on the classifier."""
    def build():
        x_train, _, x_val, _ = load_mnist(data_dir)                   # (60000, 32, 32), (10000, 32, 32)
        copy_ref = copy_reference(x_train[:, None], x_val[:, None])
        return {k: v.numpy() if torch.is_tensor(v) else v for k, v in copy_ref.items()}
    z = cached(Path(out_dir) / 'train_copies.npz', build, data=DATA_ID, dims=COPY_DIMS,
               candidates=COPY_CANDIDATES, rate=COPY_RATE, version=COPIES_VERSION)
    return {**{k: torch.from_numpy(z[k]) for k in ('train', 'mean', 'axes', 'z')}, 'tau': float(z['tau'])}

if __name__ == '__main__':
    main()
