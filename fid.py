"""
A report card for generated digits, with our MNIST classifier in place of the Inception
network: the Fréchet distance ("FID") that the later parts of the series quote, and the
metrics that tell *what kind* of failure a set of samples has.

    python fid.py                        # the reference table: what each metric sees
    python fid.py samples.npy            # the report card of generated digits vs the training set
    python fid.py samples/               # the same for a folder of PNG images
    python fid.py a.npy b.pt             # two sets of images (b plays the real side)
    python fid.py samples.npy --save-stats samples.npz   # keep (mu, sigma) for FID later

    from fid import report, train_reference; from model import load_classifier
    model, _ = load_classifier('out/classifier.pt')
    r = report(model, x_generated, train_reference(model, 'out/classifier.pt'))  # a dict

Every metric works on what the classifier sees: its 128-d feature vector (model.py) and
its digit probabilities. The features are, by default (--features post), the input of the
final linear layer, after the last ReLU: that is what the series' final post describes,
its numbers land on that post's scale (validation vs train: 0.28 here, 0.30 there), and
they vary less from one trained classifier to the next than the blog's pre-ReLU features
(--features pre), which are about 10x larger and give 30-100x larger FIDs.

- FID (Heusel et al. 2017, arXiv:1706.08500): fit N(mu, sigma) to each set's features,
  d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrt(sigma1 sigma2)). Biased upwards
  for small sets: compare numbers at the same N (the series uses 10,000).
- KID (Bińkowski et al. 2018, "Demystifying MMD GANs", arXiv:1801.01401): the unbiased
  squared MMD with the kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets. No
  small-sample bias: two sets of one distribution average 0 (sometimes below).
- Precision and recall (Kynkäänniemi et al. 2019, arXiv:1904.06991, k = 3): the share of
  generated samples inside the real manifold (quality), and of real samples inside the
  generated manifold (coverage); a manifold is the union of balls around each point with
  radius its distance to its k-th nearest neighbour.
- Digits: the classifier's predicted digit for each sample, the digit mix against the
  training set's, the mean confidence, and the classifier score (the Inception Score of
  Salimans et al. 2016, arXiv:1606.03498, with this classifier): exp(E_x KL(p(y|x) || p(y))),
  between 1 and 10.

The same images score differently under different classifiers, so every report names its
yardstick: the classifier (the first 12 hex digits of its checkpoint's SHA-256), the
features and N on each side; statistics files carry the same, and are only compared with
statistics of the same yardstick. Statistics files are .npz with `mu` and `sigma`, as in
pytorch-fid (mseitzer/pytorch-fid).
"""

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mnist import load_mnist, pad, plot_tiles, save_figure
from model import get_device, load_classifier

FEATURES = 128          # the size of the feature vector
REFERENCE_N = 10_000    # the N the series' numbers are quoted at
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000   # Bińkowski et al.'s defaults
KID_DIGIT_SUBSETS = 10  # per digit, fewer subsets: ten KIDs must fit the time budget
PR_K, PR_N = 3, 10_000  # k of the k-NN balls; at most this many samples on each side
PRESENT = 0.01          # a digit is present when at least 1% of the samples are that digit
FINAL_POST = {'validation set vs train': '0.30', 'Gaussian noise vs train': '48.43'}

# -----------------------------------------------------------------------------
# what the classifier sees: features and digit probabilities, in one pass

@torch.no_grad()
def embed(model, x, after_relu=True, batch_size=1000):
    """Features (N, 128) and digit probabilities (N, 10), float32 on the CPU, of images
    x (N, 1, 32, 32) on any device; batches go to the model's device one at a time."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    f, p = [], []
    for i in range(0, len(x), batch_size):
        fb, logits = model.features_and_logits(x[i:i + batch_size].to(device), after_relu)
        f.append(fb.float().cpu())                                    # (B, 128)
        p.append(logits.float().softmax(1).cpu())                     # (B, 10)
    model.train(was_training)
    return torch.cat(f), torch.cat(p)

def mean_cov(f):
    """Mean (D,) and unbiased covariance (D, D) of features f (N, D), float64 numpy. The
    mean is subtracted before the product, so a large mean costs no precision."""
    f = torch.as_tensor(f).double()
    if len(f) < 2:
        raise ValueError(f'a covariance needs at least 2 images, got {len(f)}')
    mu = f.mean(0)                                                    # (D,)
    c = f - mu                                                        # (N, D) centred
    return mu.numpy(), (c.T @ c / (len(f) - 1)).numpy()               # like np.cov

def feature_statistics(model, x, batch_size=1000, after_relu=True):
    """(mu, sigma) of the classifier's features over images x (N, 1, 32, 32)."""
    return mean_cov(embed(model, x, after_relu, batch_size)[0])

# -----------------------------------------------------------------------------
# FID

def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    tr(sqrt(sigma1 sigma2)) comes from a symmetric eigenproblem: sigma1 sigma2 has the same
    eigenvalues as the symmetric positive semi-definite matrix sqrt(sigma1) sigma2
    sqrt(sigma1), so its trace-root is the sum of the square roots of those eigenvalues
    (clamped at zero against rounding). Unlike a general matrix square root (scipy's sqrtm,
    which pytorch-fid uses) this never returns NaN or a complex number, also for singular
    covariances, such as those from fewer images than features.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    # check the input: matching shapes, finite, symmetric
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    for name, a, shape in (('mu1', mu1, (d,)), ('mu2', mu2, (d,)),
                           ('sigma1', sigma1, (d, d)), ('sigma2', sigma2, (d, d))):
        if a.shape != shape:
            raise ValueError(f'{name} has shape {a.shape}, expected {shape} '
                             f'(mu1 has shape {mu1.shape})')
        if not np.isfinite(a).all():
            raise ValueError(f'{name} has NaN or infinite entries')
    for name, s in (('sigma1', sigma1), ('sigma2', sigma2)):
        if not np.allclose(s, s.T, rtol=1e-6, atol=1e-9 * max(np.abs(s).max(), 1e-300)):
            raise ValueError(f'{name} is not symmetric, so it is not a covariance matrix')
    # sqrt(sigma1) from the eigendecomposition sigma1 = V diag(w) V^T
    w, V = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    sqrt1 = (V * np.sqrt(np.clip(w, 0, None))) @ V.T                 # (d, d)
    M = sqrt1 @ sigma2 @ sqrt1                                        # (d, d) symmetric PSD
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((M + M.T) / 2), 0, None)).sum()
    fd = ((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_sqrt
    return max(float(fd), 0.0)  # the true value is >= 0; clip rounding below it

# -----------------------------------------------------------------------------
# KID

def mmd2_unbiased(x, y):
    """Unbiased MMD^2 of samples x (m, d) and y (n, d) with k(a, b) = (a.b / d + 1)^3:
    the mean of k over pairs i != j within x, plus the same within y, minus twice the mean
    of k over all pairs across. Computed in the dtype of x and y."""
    d, m, n = x.shape[1], len(x), len(y)
    k = lambda a, b: (a @ b.T).div_(d).add_(1).pow_(3)                # (len(a), len(b))
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
            + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1)) - 2 * kxy.mean()).item()

def kernel_inception_distance(f1, f2, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE, seed=0):
    """KID of features f1 (N1, D) and f2 (N2, D): (mean, standard deviation, subset size m)
    of mmd2_unbiased over `subsets` random subsets of m = min(subset_size, N1, N2) rows
    from each side, drawn without replacement from a generator seeded with `seed`. In
    float64: the kernel sums are large next to their difference (float32 is not enough for
    the pre-ReLU features, whose kernel values reach 1e10)."""
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise ValueError(f'KID needs at least 2 images on each side, got {len(f1)} and {len(f2)}')
    g = torch.Generator().manual_seed(seed)
    values = np.array([mmd2_unbiased(f1[torch.randperm(len(f1), generator=g)[:m]].double(),
                                     f2[torch.randperm(len(f2), generator=g)[:m]].double())
                       for _ in range(subsets)])
    return values.mean(), values.std(), m

# -----------------------------------------------------------------------------
# precision and recall

def squared_distances(a, b):
    """(len(a), len(b)) squared Euclidean distances, |a|^2 + |b|^2 - 2 a.b: one matmul."""
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T).clamp_(min=0)

def knn_radii2(f, k=PR_K, block=1000):
    """Squared distance from each row of f (N, D) to its k-th nearest other row."""
    out = []
    for i in range(0, len(f), block):
        d2 = squared_distances(f[i:i + block], f)                     # (B, N): at most block x N
        out.append(d2.topk(k + 1, dim=1, largest=False).values[:, k])  # (B,) [:, 0] is the row itself
    return torch.cat(out)

def precision_recall(f_gen, f_real, radii2_real=None, k=PR_K, block=1000):
    """Improved precision and recall (Kynkäänniemi et al. 2019) of features f_gen (N, D)
    against f_real (M, D). precision = the share of generated rows inside the real manifold,
    the union of the balls around each real row with radius its distance to its k-th nearest
    real neighbour (radii2_real, squared, when already known); recall = the same with the
    roles swapped. One pass over blocks of generated rows, so memory stays at block x M."""
    if min(len(f_gen), len(f_real)) < k + 1:
        raise ValueError(f'precision and recall need at least k + 1 = {k + 1} images on each '
                         f'side, got {len(f_gen)} and {len(f_real)}')
    radii2_real = knn_radii2(f_real, k, block) if radii2_real is None else radii2_real
    radii2_gen = knn_radii2(f_gen, k, block)                          # (N,)
    gen_inside, real_covered = 0, torch.zeros(len(f_real), dtype=torch.bool)
    for i in range(0, len(f_gen), block):
        d2 = squared_distances(f_gen[i:i + block], f_real)            # (B, M)
        gen_inside += (d2 <= radii2_real[None, :]).any(1).sum().item()   # in a real ball
        real_covered |= (d2 <= radii2_gen[i:i + block, None]).any(0)   # in a generated ball
    return gen_inside / len(f_gen), real_covered.double().mean().item()

# -----------------------------------------------------------------------------
# digits

def digit_shares(pred):
    """(10,) the share of each predicted digit."""
    return torch.bincount(torch.as_tensor(pred), minlength=10).double() / len(pred)

def kl_divergence(p, q):
    """KL(p || q) of two distributions over the 10 digits; terms with p = 0 count 0."""
    p, q = torch.as_tensor(p).double(), torch.as_tensor(q).double()
    return (torch.special.xlogy(p, p) - torch.special.xlogy(p, q)).sum().item()

def classifier_score(probs):
    """exp(E_x KL(p(y|x) || p(y))), p(y) the mean of p(y|x) over the samples: 10 for
    confident predictions spread evenly over the digits, 1 for one digit (or no confidence)."""
    p = torch.as_tensor(probs).double()                               # (N, 10)
    kl = (torch.special.xlogy(p, p) - torch.special.xlogy(p, p.mean(0, keepdim=True))).sum(1)
    return kl.mean().exp().item()

# -----------------------------------------------------------------------------
# the report card

def reference(f, pred, seed=0, mu=None, sigma=None, radii2=None):
    """Everything a report compares with, from the real side's features f (M, D) and
    predicted digits (M,): their statistics, and the fixed random subset of at most PR_N
    rows (seeded) with its squared k-NN radii for precision and recall. Parts already
    known (from a cache) are passed in and not recomputed."""
    if mu is None:
        mu, sigma = mean_cov(f)
    pr_idx = torch.randperm(len(f), generator=torch.Generator().manual_seed(seed))[:PR_N]
    if radii2 is None and len(pr_idx) > PR_K:  # with k or fewer there are no k-th neighbours
        radii2 = knn_radii2(f[pr_idx])
    return {'f': f, 'pred': pred, 'mu': mu, 'sigma': sigma, 'pr_idx': pr_idx, 'radii2': radii2}

def report_from_features(f, probs, ref, seed=0):
    """Every metric of generated features f (N, D) and probabilities (N, 10) against a
    reference(); returns a dict, with 'warnings' for numbers from too few images."""
    N, M = len(f), len(ref['f'])
    r = {'n': N, 'n_real': M, 'warnings': [], 'timing': {}}
    t = time.perf_counter()
    def lap(name):  # the seconds each part takes, for the README's measurements
        nonlocal t
        r['timing'][name], t = time.perf_counter() - t, time.perf_counter()
    if N < FEATURES:
        r['warnings'].append(f'only {N} images, fewer than the {FEATURES} features: the covariance is '
                             f'rank-deficient and the FID biased upwards; compare FIDs at {REFERENCE_N:,}')
    r['fid'] = frechet_distance(*mean_cov(f), ref['mu'], ref['sigma'])
    lap('FID')
    r['kid'], r['kid_std'], r['kid_subset'] = kernel_inception_distance(f, ref['f'], seed=seed)
    if r['kid_subset'] < KID_SUBSET_SIZE:
        r['warnings'].append(f'KID on subsets of {r["kid_subset"]}, not {KID_SUBSET_SIZE}: noisier')
    lap('KID')
    # precision and recall on at most PR_N samples a side: the k-NN radii shrink as a set
    # grows, so the numbers compare only at the same N
    f_pr = f[torch.randperm(N, generator=torch.Generator().manual_seed(seed))[:PR_N]]
    r['pr_n'], r['pr_n_real'] = len(f_pr), len(ref['pr_idx'])
    if min(len(f_pr), len(ref['pr_idx'])) > PR_K:
        r['precision'], r['recall'] = precision_recall(f_pr, ref['f'][ref['pr_idx']], ref['radii2'])
    else:
        r['precision'] = r['recall'] = float('nan')
        r['warnings'].append(f'precision and recall need at least {PR_K + 1} images on each side')
    lap('precision/recall')
    # the digits: which ones, how sure, and KID within each digit
    pred = probs.argmax(1)                                            # (N,) the predicted digits
    shares, real_shares = digit_shares(pred), digit_shares(ref['pred'])  # (10,), (10,)
    r['classifier_score'] = classifier_score(probs)
    r['confidence'] = probs.max(1).values.double().mean().item()
    r['digits_present'] = int((shares >= PRESENT).sum())
    r['digit_kl'] = kl_divergence(shares, real_shares)
    r['digits'] = []
    for d in range(10):
        fg, fr = f[pred == d], ref['f'][ref['pred'] == d]
        kid = kernel_inception_distance(fg, fr, KID_DIGIT_SUBSETS, seed=seed)[0] if min(len(fg), len(fr)) >= 2 else float('nan')
        r['digits'].append({'digit': d, 'n': len(fg), 'share': shares[d].item(), 'real_share': real_shares[d].item(),
                            'confidence': probs[pred == d].max(1).values.double().mean().item() if len(fg) else float('nan'),
                            'kid': kid})
    lap('digits')
    return r

def report(model, x_generated, ref, after_relu=True, batch_size=1000, seed=0, classifier=None):
    """The report card of generated images (any shape to_model_input accepts) against a
    reference() of real images (train_reference() for the training set): a dict with the
    FID, KID, precision, recall, the digit metrics, and the yardstick it was measured with."""
    t0 = time.perf_counter()
    x = to_model_input(x_generated, 'the generated images')
    f, probs = embed(model, x, after_relu, batch_size)                # (N, 128), (N, 10)
    r = report_from_features(f, probs, ref, seed)
    r.update(classifier=classifier, features='post' if after_relu else 'pre',
             seconds=time.perf_counter() - t0)
    return r

def print_report(r, name, real_name):
    final = FINAL_POST['validation set vs train'] if r['features'] == 'post' else None
    print(f'\nreport card: {name} ({r["n"]:,} images) vs {real_name} ({r["n_real"]:,} images)')
    print(f'  FID               {r["fid"]:10.4f}   distance between the feature Gaussians'
          + (f' (real vs real at 10,000: about {final})' if final else ''))
    print(f'  KID               {r["kid"]:10.4g}   +- {r["kid_std"]:.4g} over {KID_SUBSETS} subsets of '
          f'{r["kid_subset"]:,}; unbiased: 0 for the same distribution')
    print(f'  precision         {r["precision"]:10.3f}   share of samples inside the real manifold: quality')
    print(f'  recall            {r["recall"]:10.3f}   share of real digits inside the samples\' manifold: coverage')
    print(f'  classifier score  {r["classifier_score"]:10.2f}   of 10: confident and varied digits')
    print(f'  digits present    {r["digits_present"]:7d}/10   (at least {PRESENT:.0%} of the samples each) | '
          f'digit mix KL {r["digit_kl"]:.4f} | mean confidence {r["confidence"]:.3f}')
    print('\n  digit |  share | real share | confidence | KID')
    for d in r['digits']:
        print(f'  {d["digit"]:5d} | {d["share"]:6.1%} | {d["real_share"]:10.1%} | '
              f'{d["confidence"]:10.3f} | {d["kid"]:.4g}')
    print(f'\nyardstick: classifier {r["classifier"]} | features {r["features"]} | N {r["n"]:,} vs '
          f'{r["n_real"]:,} (KID subsets of {r["kid_subset"]:,}; precision/recall {r["pr_n"]:,} vs '
          f'{r["pr_n_real"]:,}, k = {PR_K})')
    for w in r['warnings']:
        print(f'warning: {w}', file=sys.stderr)

# -----------------------------------------------------------------------------
# inputs: images in every shape generators write, PNG folders, statistics files

def to_model_input(x, name):
    """Check generated digits and shape them as the classifier expects: (N, 1, 32, 32) float32.

    Accepts (N, 28, 28) or (N, 32, 32) images, with a channel of 1 first (N, 1, H, W) or
    last (N, H, W, 1), or flattened (N, 784) / (N, 1024); floats in [0, 1] or uint8 0-255.
    Anything else gets one ValueError that names the input and says what was expected.
    """
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
    if x.dtype == torch.uint8:
        x = x.float() / 255
    elif x.is_floating_point():
        if not torch.isfinite(x).all():
            raise ValueError(f'{name}: {int((~torch.isfinite(x)).sum())} values are NaN or infinite')
        lo, hi = (x.min().item(), x.max().item()) if x.numel() else (0, 0)
        if lo < 0 or hi > 1:
            hint = ('map them with (x + 1) / 2, the usual output range of diffusion models'
                    if lo >= -1 and hi <= 1 else 'divide uint8 values by 255, or clip')
            raise ValueError(f'{name}: float images must lie in [0, 1], found values in '
                             f'[{lo:.4g}, {hi:.4g}]: {hint}')
        x = x.float()
    else:
        raise ValueError(f'{name}: expected float images in [0, 1] or uint8 in 0-255, got {x.dtype}')
    if len(x) < 2:
        raise ValueError(f'{name}: the metrics need at least 2 images, got {len(x)}')
    if x.shape[1] == 28:
        x = pad(x)                                                    # (N, 32, 32)
    return x[:, None]                                                 # (N, 1, 32, 32)

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
            raise ValueError(f'{p}: not a readable PNG image ({e})') from None
        if a.ndim == 3:                   # (H, W, C): gray + alpha (2), RGB (3) or RGBA (4)
            n_colour = 1 if a.shape[2] == 2 else 3
            colour, alpha = a[..., :n_colour], a[..., n_colour:]      # alpha (H, W, 0 or 1)
            if (alpha < 1).any():
                raise ValueError(f'{p}: the image has transparent pixels; expected opaque grayscale digits')
            if (colour != colour[..., :1]).any():
                raise ValueError(f'{p}: a colour image; expected grayscale digits (or RGB with equal channels)')
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
        try:
            x = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f'{path}: not a readable .npy array: empty, cut short or not numpy ({e})') from None
    elif path.suffix == '.pt':
        try:
            x = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as e:
            raise ValueError(f'{path}: not a readable .pt file ({e})') from None
        if not isinstance(x, torch.Tensor):
            raise ValueError(f'{path}: expected one tensor of images, got {type(x).__name__}')
    else:
        raise ValueError(f'{path}: expected a .npy or .pt file of images, a folder of PNGs, or .npz statistics')
    return to_model_input(x, path)

def save_stats(path, mu, sigma, **meta):
    """Write mu, sigma (and metadata, the yardstick) as .npz, via a temporary name and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp')
    with open(tmp, 'wb') as fh:  # a file object: np.savez would append .npz to a name
        np.savez(fh, mu=mu, sigma=sigma, **meta)
    os.replace(tmp, path)

def load_stats(path, classifier=None, features=None):
    """(mu, sigma, metadata dict) from a .npz statistics file; with classifier and features
    given, the file must have been written with that same yardstick."""
    try:
        with np.load(path, allow_pickle=False) as z:
            stats = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f'{path}: not a readable .npz file ({e})') from None
    if 'mu' not in stats or 'sigma' not in stats:
        raise ValueError(f'{path}: a statistics file needs arrays "mu" and "sigma", has {sorted(stats)}')
    meta = {k: v.item() for k, v in stats.items() if v.ndim == 0}
    for key, want in (('classifier', classifier), ('features', features)):
        if want is not None and meta.get(key) != want:
            raise ValueError(f'{path} holds statistics of {key} {meta.get(key)}, not {key} {want}: '
                             f'numbers are only comparable under one classifier and feature choice; '
                             f'compute them again with --save-stats')
    return stats['mu'], stats['sigma'], meta

def classifier_id(checkpoint):
    """The yardstick's name: the first 12 hex digits of the checkpoint file's SHA-256."""
    return hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()[:12]

def train_reference(model, checkpoint, data_dir='data', out_dir='out', after_relu=True, seed=0, batch_size=1000):
    """reference() of the 60,000 training images, cached in out_dir and recomputed when
    the checkpoint's bytes (its classifier_id) or the feature choice change."""
    features, cid = 'post' if after_relu else 'pre', classifier_id(checkpoint)
    path = Path(out_dir) / f'train_reference_{features}.npz'
    try:
        with np.load(path, allow_pickle=False) as z:
            if z['classifier'].item() == cid and z['seed'].item() == seed:
                return reference(torch.from_numpy(z['f']), torch.from_numpy(z['pred']).long(), seed,
                                 z['mu'], z['sigma'], torch.from_numpy(z['radii2']))
        print(f'{path} came from another checkpoint: recomputing', file=sys.stderr)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError):  # not a file that this function wrote
        print(f'{path} is not a cache written by fid.py: recomputing', file=sys.stderr)
    x_train = load_mnist(data_dir)[0][:, None]                        # (60000, 1, 32, 32)
    f, probs = embed(model, x_train, after_relu, batch_size)          # (60000, 128), (60000, 10)
    ref = reference(f, probs.argmax(1), seed)
    save_stats(path, ref['mu'], ref['sigma'], f=f.numpy(), pred=ref['pred'].numpy().astype(np.uint8),
               radii2=ref['radii2'].numpy(), classifier=cid, features=features, seed=seed, n=len(f))
    print(f'wrote {path}', file=sys.stderr)
    return ref

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

def plot_corruption(x, sigmas, path, g):
    """Example digits (rows) with more and more noise (columns)."""
    tiles = torch.stack([corrupt(x, s, g)[:, 0] for s in [0.0, *sigmas]], 1)   # (n, 1 + len(sigmas), 32, 32)
    plot_tiles(tiles, path, col_labels=[f'sigma {s:g}' for s in [0.0, *sigmas]], inches=1.0)

def plot_fid_vs_noise(sigmas, fids, baseline, path):
    from matplotlib.figure import Figure  # no pyplot: nothing opens a window
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(sigmas, fids, 'o-', label='validation + noise vs train')
    ax.axhline(baseline, color='gray', ls='--', label=f'validation vs train ({baseline:.2f})')
    ax.set_xscale('log'), ax.set_yscale('log')
    ax.set_xlabel('noise standard deviation sigma (pixels in [0, 1], clipped)')
    ax.set_ylabel('FID')
    ax.legend()
    ax.grid(alpha=0.3, which='both')
    save_figure(fig, path)

def plot_digits(x, probs, path, per_digit=10):
    """Samples sorted by predicted digit: a row per digit (its first per_digit samples), and
    a last row with the per_digit least confident samples, labelled 'digit probability'."""
    confidence, pred = probs.max(1)
    tiles = np.full((11, per_digit, 32, 32), np.nan)                  # NaN: no sample, drawn white
    for d in range(10):
        idx = torch.nonzero(pred == d).flatten()[:per_digit]
        tiles[d, :len(idx)] = x[idx, 0].numpy()
    least = confidence.argsort()[:per_digit]
    tiles[10, :len(least)] = x[least, 0].numpy()
    labels = [[''] * per_digit for _ in range(10)] + [[f'{pred[i]} {confidence[i]:.2f}' for i in least.tolist()]]
    plot_tiles(tiles, path, 'samples by predicted digit; last row: the least confident',
               row_labels=[str(d) for d in range(10)] + ['unsure'], tile_labels=labels)

def reference_table(model, ref, x_train, x_val, y_val, args, classifier, sizes=(50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000)):
    """Print the report of known sets of images against the training set, one row each;
    draw the noise figures; measure the small-sample bias of FID and KID."""
    g = torch.Generator().manual_seed(args.seed)
    after_relu = args.features == 'post'
    scores = lambda x: report_from_features(*embed(model, x, after_relu, args.batch_size), ref, args.seed)
    # pure noise with the mean and standard deviation of the training digits' pixels
    digits = x_train[..., 2:30, 2:30]                                 # (60000, 1, 28, 28) unpadded
    noise = pad(digits.mean() + digits.std() * torch.randn(len(x_val), 1, 28, 28, generator=g))
    rows = [('validation set vs train', x_val),
            ('validation digits 0-4 only', x_val[y_val < 5]),
            ('validation blurred (3x3 box)', blur(x_val)),
            ('validation + noise sigma 0.1', corrupt(x_val, 0.1, g)),
            ('validation + noise sigma 0.5', corrupt(x_val, 0.5, g)),
            ('Gaussian noise vs train', noise)]
    print(f'\n| compared ({args.features} features) | N | FID | final post | KID | precision | recall '
          f'| classifier score | digits present | digit mix KL |\n|{"---|" * 10}')
    results = {}
    for name, x in rows:
        r = results[name] = scores(x)
        post = FINAL_POST.get(name, '') if after_relu else 'n/a'
        print(f'| {name} | {r["n"]:,} | {r["fid"]:.2f} | {post} | {r["kid"]:.4g} | {r["precision"]:.3f} | '
              f'{r["recall"]:.3f} | {r["classifier_score"]:.2f} | {r["digits_present"]} | {r["digit_kl"]:.3f} |')
    # FID against the amount of noise, and what the noise looks like
    sigmas = [0.05, 0.1, 0.2, 0.5, 1.0]
    fids = [frechet_distance(*feature_statistics(model, corrupt(x_val, s, g), args.batch_size, after_relu),
                             ref['mu'], ref['sigma']) for s in sigmas]
    out = Path(args.out_dir)
    plot_corruption(x_val[:6], sigmas, out / 'mnist_corruption.png', g)
    plot_fid_vs_noise(sigmas, fids, results['validation set vs train']['fid'], out / 'fid_vs_noise.png')
    print(f'\nFID with noise sigma {sigmas}: {[round(f, 2) for f in fids]}')
    print(f'wrote {out / "mnist_corruption.png"} and {out / "fid_vs_noise.png"}')
    # two disjoint random sets of N training digits come from one distribution: all of their
    # FID is small-sample bias, while KID averages 0 at every N. Several disjoint pairs
    # per N (up to 10) show the spread; KID on 10 subsets per pair, for time
    print('\nsmall-sample bias: disjoint random pairs of sets of N training digits (the true distance is 0)')
    print('|      N | pairs | FID (mean over pairs) | KID (mean +- std over pairs) |\n|---|---|---|---|')
    perm = torch.randperm(len(ref['f']), generator=g)
    for n in [n for n in sizes if 2 * n <= len(ref['f'])]:
        fids, kids = [], []
        for i in range(min(10, len(ref['f']) // (2 * n))):
            a, b = ref['f'][perm[2 * i * n:(2 * i + 1) * n]], ref['f'][perm[(2 * i + 1) * n:(2 * i + 2) * n]]
            fids.append(frechet_distance(*mean_cov(a), *mean_cov(b)))
            kids.append(kernel_inception_distance(a, b, subsets=10, seed=args.seed)[0])
        print(f'| {n:6d} | {len(fids):5d} | {np.mean(fids):8.3f} | {np.mean(kids):10.4g} +- {np.std(kids):.4g} |')
    print(f'\nyardstick: classifier {classifier} | features {args.features} | N as in each row vs '
          f'{len(ref["f"]):,} training images')
    return results

# -----------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description='A report card for generated MNIST digits: FID, KID, '
                                     'precision, recall and the digits, with our classifier.',
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('inputs', nargs='*', metavar='INPUT',
                        help='none: the reference table; one: its report against the training set; two: '
                             'the first against the second. Images as .npy, .pt or a folder of PNGs, '
                             'or statistics as .npz (FID only)')
    parser.add_argument('--features', choices=['pre', 'post'], default='post',
                        help="the 128-d features after the last ReLU (the series' scale) or before it (the blog's)")
    parser.add_argument('--save-stats', metavar='NPZ', help='also write the statistics of the one input to this .npz')
    parser.add_argument('--checkpoint', default='out/classifier.pt', help='checkpoint written by train.py')
    parser.add_argument('--data-dir', default='data', help='folder with (or for) the four MNIST IDX files')
    parser.add_argument('--out-dir', default='out', help='folder for the cached training features and the figures')
    parser.add_argument('--batch-size', type=int, default=1000, help='images per forward pass')
    parser.add_argument('--seed', type=int, default=0, help='seed for the random subsets and the noise')
    parser.add_argument('--device', default='auto', help='auto (cuda, then mps, then cpu), or any torch device')
    args = parser.parse_args(argv)
    if len(args.inputs) > 2:
        parser.error(f'give at most two inputs, got {len(args.inputs)}')
    if args.save_stats and len(args.inputs) != 1:
        parser.error('--save-stats needs exactly one input')
    if args.batch_size < 1:
        parser.error(f'--batch-size must be at least 1, got {args.batch_size}')
    try:
        args.device = get_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    after_relu = args.features == 'post'

    try:
        model, _ = load_classifier(args.checkpoint, args.device)
        cid = classifier_id(args.checkpoint)
        train_ref = lambda: train_reference(model, args.checkpoint, args.data_dir, args.out_dir, after_relu,
                                            args.seed, args.batch_size)
        if not args.inputs:
            print(vars(args))
            x_train, _, x_val, y_val = load_mnist(args.data_dir)
            reference_table(model, train_ref(), x_train[:, None], x_val[:, None], y_val, args, cid)
            return
        if any(Path(p).suffix == '.npz' for p in args.inputs):
            # statistics files: the Gaussians are all there is, so FID alone
            if args.save_stats:
                raise ValueError('--save-stats needs images, not a statistics file')
            stats = [load_stats(p, cid, args.features)[:2] if Path(p).suffix == '.npz'
                     else mean_cov(embed(model, load_images(p), after_relu, args.batch_size)[0])
                     for p in args.inputs]
            if len(stats) == 1:
                ref = train_ref()
                stats.append((ref['mu'], ref['sigma']))
            print(f'FID {frechet_distance(*stats[0], *stats[1]):.4f} (KID, precision, recall and the digits '
                  f'need images, not statistics)')
            print(f'yardstick: classifier {cid} | features {args.features}')
            return
        # images: the full report card
        x = load_images(args.inputs[0])                               # (N, 1, 32, 32)
        if len(args.inputs) == 2:
            f_real, p_real = embed(model, load_images(args.inputs[1]), after_relu, args.batch_size)
            ref, real_name = reference(f_real, p_real.argmax(1), args.seed), args.inputs[1]
        else:
            ref, real_name = train_ref(), 'MNIST train'
        t0 = time.perf_counter()
        f, probs = embed(model, x, after_relu, args.batch_size)       # (N, 128), (N, 10)
        r = report_from_features(f, probs, ref, args.seed)
        r.update(classifier=cid, features=args.features, seconds=time.perf_counter() - t0)
        print_report(r, args.inputs[0], real_name)
        print(f'scored in {r["seconds"]:.2f} s on {args.device} ('
              + ', '.join(f'{k} {v:.2f} s' for k, v in r['timing'].items()) + ')')
        path = Path(args.out_dir) / f'{Path(args.inputs[0]).stem or "samples"}_digits.png'
        plot_digits(x, probs, path)
        print(f'wrote {path}')
        if args.save_stats:
            save_stats(args.save_stats, *mean_cov(f), classifier=cid, features=args.features, n=len(f))
            print(f'wrote {args.save_stats}')
    except (FileNotFoundError, ValueError) as e:
        parser.exit(1, f'error: {e}\n')


if __name__ == '__main__':
    main()
