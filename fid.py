"""
The classifier-based Fréchet distance ("FID") that the later parts of the series use to
score generated digits, with our MNIST classifier in place of the Inception network.

    python fid.py                        # the reference table: validation set, noise, corruption
    python fid.py samples.npy            # score generated digits against the training set
    python fid.py a.npy b.pt             # compare two sets of images (or .npz statistics)
    python fid.py samples.npy --save-stats samples.npz

    from fid import frechet_distance, feature_statistics, load_images

Heusel et al. 2017 ("GANs Trained by a Two Time-Scale Update Rule Converge to a Local
Nash Equilibrium", https://arxiv.org/abs/1706.08500) fit a normal distribution N(mu, sigma)
to the features of each set of images and report the Fréchet (2-Wasserstein) distance
between the two normals:

    d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrt(sigma1 sigma2))

The features are the classifier's 128-d vector from model.py. By default (--features pre)
it is the blog's: the last convolution *before* its ReLU, average-pooled 4x4. --features
post takes the 128-d input of the final linear layer (after the ReLU), which is what the
series' final post describes, and its numbers land on that post's scale (validation vs
train: 0.28 here, 0.30 there); the pre-ReLU features are larger, and so are their FIDs.
The README gives the table for both.

Images enter as the classifier saw them in training: 32x32 in [0, 1], where 28x28 inputs
are zero-padded the way mnist.py pads MNIST. Statistics files are .npz with `mu` and
`sigma`, the format pytorch-fid (mseitzer/pytorch-fid) uses.
"""

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mnist import load_mnist, pad, save_figure
from model import get_device, load_classifier

FEATURES = 128
# FID is biased upwards for small sets of images: two disjoint random sets of N real
# training digits score far above 0 until N is in the thousands (`python fid.py` measures
# it; see the README). Numbers are comparable only at the same N: the series uses 10,000.
REFERENCE_N = 10_000

# -----------------------------------------------------------------------------
# the maths

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

@torch.no_grad()
def feature_statistics(model, x, batch_size=1000, after_relu=False):
    """Mean (D,) and covariance (D, D), float64 numpy, of model.features over images x.

    x is (N, 1, 32, 32) on any device; batches go to the model's device one at a time and
    only the running sums are kept, so memory stays bounded whatever N is. The sums are
    float64 on the CPU (MPS has no float64), taken around the first image's features: a
    shift that changes nothing in the maths but keeps sum(f f^T) - N mu mu^T from
    cancelling catastrophically when the mean is large next to the spread.
    """
    N = len(x)
    if N < 2:
        raise ValueError(f'a covariance needs at least 2 images, got {N}')
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    shift = s1 = s2 = None
    for i in range(0, N, batch_size):
        f = model.features(x[i:i + batch_size].to(device), after_relu=after_relu)  # (B, D)
        f = f.cpu().double()
        if shift is None:
            shift = f[0].clone()
            s1 = torch.zeros_like(shift)                              # (D,)   sum of f - shift
            s2 = torch.zeros(len(shift), len(shift), dtype=torch.float64)  # (D, D) sum of outer products
        f = f - shift
        s1 += f.sum(0)
        s2 += f.T @ f
    model.train(was_training)
    m = s1 / N                                                        # mean of f - shift
    sigma = (s2 - N * torch.outer(m, m)) / (N - 1)                    # unbiased, like np.cov
    return (m + shift).numpy(), sigma.numpy()

# -----------------------------------------------------------------------------
# images and statistics files

def to_model_input(x, name):
    """Check generated digits and shape them as the classifier expects: (N, 1, 32, 32) float32.

    Accepts (N, 28, 28), (N, 1, 28, 28), (N, 32, 32) or (N, 1, 32, 32); floats in [0, 1]
    or uint8 in 0-255. Anything else gets one ValueError that names the input.
    """
    x = torch.as_tensor(x)
    shapes = '(N, 28, 28), (N, 1, 28, 28), (N, 32, 32) or (N, 1, 32, 32)'
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]                                                   # (N, H, W)
    if x.ndim != 3 or tuple(x.shape[1:]) not in ((28, 28), (32, 32)):
        raise ValueError(f'{name}: expected images of shape {shapes}, got {tuple(x.shape)}')
    if x.dtype == torch.uint8:
        x = x.float() / 255
    elif x.is_floating_point():
        if not torch.isfinite(x).all():
            raise ValueError(f'{name}: {int((~torch.isfinite(x)).sum())} values are NaN or infinite')
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError(f'{name}: float images must lie in [0, 1], found values in '
                             f'[{x.min().item():.4g}, {x.max().item():.4g}] (divide uint8 by 255, '
                             f'or clip)')
        x = x.float()
    else:
        raise ValueError(f'{name}: expected float images in [0, 1] or uint8 in 0-255, got {x.dtype}')
    if len(x) < 2:
        raise ValueError(f'{name}: a Fréchet distance needs at least 2 images, got {len(x)}')
    if x.shape[1] == 28:
        x = pad(x)                                                    # (N, 32, 32)
    return x[:, None]                                                 # (N, 1, 32, 32)

def load_images(path):
    """Generated digits from a .npy or .pt file, checked and shaped (N, 1, 32, 32)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{path}: no such file')
    if path.suffix == '.npy':
        try:
            x = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ValueError(f'{path}: not a readable .npy array ({e})') from None
    elif path.suffix == '.pt':
        try:
            x = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as e:
            raise ValueError(f'{path}: not a readable .pt file ({e})') from None
        if not isinstance(x, torch.Tensor):
            raise ValueError(f'{path}: expected one tensor of images, got {type(x).__name__}')
    else:
        raise ValueError(f'{path}: expected a .npy or .pt file of images, or .npz statistics')
    return to_model_input(x, path)

def save_stats(path, mu, sigma, **meta):
    """Write mu, sigma (and metadata) as .npz, via a temporary name and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp')
    with open(tmp, 'wb') as fh:  # a file object: np.savez would append .npz to a name
        np.savez(fh, mu=mu, sigma=sigma, **meta)
    os.replace(tmp, path)

def load_stats(path):
    """(mu, sigma, metadata dict) from a .npz statistics file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            stats = {k: z[k] for k in z.files}
    except (ValueError, OSError) as e:
        raise ValueError(f'{path}: not a readable .npz file ({e})') from None
    if 'mu' not in stats or 'sigma' not in stats:
        raise ValueError(f'{path}: a statistics file needs arrays "mu" and "sigma", has {sorted(stats)}')
    return stats.pop('mu'), stats.pop('sigma'), {k: v.item() for k, v in stats.items() if v.ndim == 0}

def file_sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

def train_statistics(model, args, x_train=None):
    """The training set's statistics, cached in out/ and tied to the checkpoint's bytes."""
    path = Path(args.out_dir) / f'train_stats_{args.features}.npz'
    ckpt_sha = file_sha256(args.checkpoint)
    if path.exists():
        mu, sigma, meta = load_stats(path)
        if meta.get('checkpoint_sha256') == ckpt_sha:
            return mu, sigma
        print(f'{path} came from another checkpoint: recomputing')
    if x_train is None:
        x_train = load_mnist(args.data_dir)[0][:, None]               # (60000, 1, 32, 32)
    mu, sigma = feature_statistics(model, x_train, args.batch_size, args.features == 'post')
    save_stats(path, mu, sigma, checkpoint_sha256=ckpt_sha, features=args.features, n=len(x_train))
    print(f'wrote {path}')
    return mu, sigma

def statistics_of(path, model, args):
    """(mu, sigma) of an input file: a .npz of statistics, or images to run through the model."""
    if Path(path).suffix == '.npz':
        mu, sigma, meta = load_stats(path)
        if meta.get('features', args.features) != args.features:
            raise ValueError(f'{path} holds statistics of --features {meta["features"]}, '
                             f'not --features {args.features}')
        return mu, sigma
    x = load_images(path)
    if len(x) < FEATURES:
        print(f'warning: {path} holds only {len(x)} images, fewer than the {FEATURES} features: the '
              f'covariance is rank-deficient and the FID is biased upwards (two disjoint sets of '
              f'{FEATURES} real training digits already score far above 0). Score {REFERENCE_N:,} '
              f'images for numbers comparable with the README\'s.', file=sys.stderr)
    return feature_statistics(model, x, args.batch_size, args.features == 'post')

# -----------------------------------------------------------------------------
# the reference table of `python fid.py`

def corrupt(x, sigma, g):
    """Add N(0, sigma^2) noise to the 28x28 digit inside each 32x32 image, clip to [0, 1]."""
    x = x.clone()
    x[..., 2:30, 2:30] = (x[..., 2:30, 2:30] + sigma * torch.randn(x[..., 2:30, 2:30].shape, generator=g)).clamp(0, 1)
    return x

def plot_corruption(x, sigmas, path, g):
    from matplotlib.figure import Figure  # no pyplot: nothing opens a window
    fig = Figure(figsize=(1.3 * (len(sigmas) + 1), 1.3 * len(x) + 0.3))
    axes = fig.subplots(len(x), len(sigmas) + 1)
    for j, s in enumerate([0.0] + list(sigmas)):
        xs = corrupt(x, s, g)
        for i in range(len(x)):
            axes[i, j].imshow(xs[i, 0], cmap='gray', vmin=0, vmax=1)
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
        axes[0, j].set_title(f'sigma {s:g}', fontsize=9)
    save_figure(fig, path)

def plot_fid_vs_noise(sigmas, fids, baseline, path):
    from matplotlib.figure import Figure
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

def reference_table(model, args):
    """Print the FID of known sets of images against the training set, like the final post's
    table; draw the corruption figures; measure the small-sample floor of the FID."""
    g = torch.Generator().manual_seed(args.seed)
    x_train, _, x_val, _ = load_mnist(args.data_dir)
    x_train, x_val = x_train[:, None], x_val[:, None]                 # (N, 1, 32, 32)
    stats = lambda x: feature_statistics(model, x, args.batch_size, args.features == 'post')
    mu_t, sigma_t = train_statistics(model, args, x_train)
    fid = lambda x: frechet_distance(*stats(x), mu_t, sigma_t)        # FID against the training set
    # the real validation digits: the best a generator of this many images could hope for
    mu_v, sigma_v = stats(x_val)
    rows = [('validation set (10,000) vs train', frechet_distance(mu_v, sigma_v, mu_t, sigma_t), '0.30')]
    # pure noise with the mean and standard deviation of the training digits' pixels
    digits = x_train[..., 2:30, 2:30]                                 # (60000, 1, 28, 28) unpadded
    noise = digits.mean() + digits.std() * torch.randn(len(x_val), 1, 28, 28, generator=g)
    rows.append((f'Gaussian noise (mean {digits.mean():.3f}, std {digits.std():.3f}) vs train',
                 fid(pad(noise)), '48.43'))
    # the validation digits with more and more noise
    sigmas = [0.05, 0.1, 0.2, 0.5, 1.0]
    fids = [fid(corrupt(x_val, s, g)) for s in sigmas]
    rows += [(f'validation + noise sigma {s:g} vs train', f, '') for s, f in zip(sigmas, fids)]
    # and a sanity check: a set against itself is at distance 0
    rows.append(('validation set vs itself', frechet_distance(mu_v, sigma_v, mu_v, sigma_v), '0'))
    print(f'\n| {"compared":<50} | {"FID":>8} | final post |')
    print(f'|{"-" * 52}|{"-" * 10}|------------|')
    for name, value, post_value in rows:
        print(f'| {name:<50} | {value:8.2f} | {post_value:>10} |')
    out = Path(args.out_dir)
    plot_corruption(x_val[:6], sigmas, out / 'mnist_corruption.png', g)
    plot_fid_vs_noise(sigmas, fids, rows[0][1], out / 'fid_vs_noise.png')
    print(f'\nwrote {out / "mnist_corruption.png"} and {out / "fid_vs_noise.png"}')
    # how many images a stable number needs: two disjoint random sets of N training digits
    # come from the same distribution, so all of their FID is small-sample bias
    print('\nFID between two disjoint random subsets of the training set (the floor for N images):')
    perm = torch.randperm(len(x_train), generator=g)
    for n in (50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000):
        a, b = x_train[perm[:n]], x_train[perm[n:2 * n]]
        print(f'N {n:6d} | FID {frechet_distance(*stats(a), *stats(b)):8.3f}')

# -----------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description='Classifier-based Fréchet distance (FID) on MNIST.',
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('inputs', nargs='*', metavar='FILE',
                        help='none: the reference table; one: its FID against the training set; '
                             'two: their FID. Images as .npy or .pt, or statistics as .npz')
    parser.add_argument('--features', choices=['pre', 'post'], default='pre',
                        help="the blog's 128-d features before the last ReLU, or after it")
    parser.add_argument('--save-stats', metavar='NPZ', help='also write the statistics of the one input to this .npz')
    parser.add_argument('--checkpoint', default='out/classifier.pt', help='checkpoint written by train.py')
    parser.add_argument('--data-dir', default='data', help='folder with (or for) the four MNIST IDX files')
    parser.add_argument('--out-dir', default='out', help='folder for cached statistics and figures')
    parser.add_argument('--batch-size', type=int, default=1000, help='images per forward pass')
    parser.add_argument('--seed', type=int, default=0, help='seed for the noise in the reference table')
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

    try:
        model, _ = load_classifier(args.checkpoint, args.device)
        if not args.inputs:
            print(vars(args))
            reference_table(model, args)
        else:
            t0 = time.perf_counter()
            stats = [statistics_of(p, model, args) for p in args.inputs]
            if len(stats) == 1:
                stats.append(train_statistics(model, args))
            fd = frechet_distance(*stats[0], *stats[1])
            if args.save_stats:
                save_stats(args.save_stats, *stats[0], features=args.features)
                print(f'wrote {args.save_stats}', file=sys.stderr)
            print(f'scored in {time.perf_counter() - t0:.2f} s on {args.device}', file=sys.stderr)
            print(f'{fd:.4f}')
    except (FileNotFoundError, ValueError) as e:
        parser.exit(1, f'error: {e}\n')


if __name__ == '__main__':
    main()
