"""
Look inside the trained classifier, as the blog's "Evaluation" section does.

    python train.py                  # first: writes out/classifier.pt
    python inspect_activations.py    # figures in out/, numbers on stdout

1. Mean activation maps per digit: for each digit 0-9, the mean over the test images of
   that digit of the outputs of the three pooling layers (layers[2], [5] and [8]).
   Written to out/activations_level{0,1,2}.png, one row per digit, one column per channel.
2. Dead channels: channels whose mean activation stays near zero for every digit, which
   the blog calls "a waste of memory/compute".
3. The feature distribution: the Fréchet distance (fid.py) models the 128-d features as a
   multivariate normal. We histogram the first 16 features with the fitted normal density
   on top (out/feature_histograms.png), and summarise all 128 by their skewness and excess
   kurtosis (both 0 for a normal), before the last ReLU (the blog's choice) and after it.

Follows the blog post "Latent Diffusion Series: MNIST Classifier" (Nick Tasios).
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mnist import load_mnist, save_figure
from model import get_device, load_classifier

LEVELS = (2, 5, 8)  # indices of the pooling layers in model.layers, as in the blog

# -----------------------------------------------------------------------------
# the maths

@torch.no_grad()
def mean_activations(model, x, y, layers=LEVELS, batch_size=1000):
    """{layer index: (10, C, H, W) mean output of model.layers[index] per digit}."""
    sums, counts = {}, torch.bincount(y.cpu(), minlength=10).double()   # (10,) images per digit
    for i in range(0, len(x), batch_size):
        h, yb = x[i:i + batch_size], y[i:i + batch_size]             # (B, 1, 32, 32), (B,)
        # run the layers in order, keeping the outputs we want
        for j, layer in enumerate(model.layers[:max(layers) + 1]):
            h = layer(h)
            if j in layers:
                if j not in sums:  # float64 on the CPU: exact enough, and MPS has no float64
                    sums[j] = torch.zeros(10, *h.shape[1:], dtype=torch.float64)
                sums[j].index_add_(0, yb.cpu(), h.cpu().double())    # add each image to its digit's row
    assert (counts > 0).all(), 'every digit needs at least one image'
    return {j: (s / counts.view(10, 1, 1, 1)).float() for j, s in sums.items()}

def dead_channels(maps, threshold=0.01):
    """Channels whose spatial mean stays below threshold x the level's largest one, for every digit."""
    channel_means = maps.mean(dim=(2, 3))                             # (10, C)
    limit = threshold * channel_means.max()
    return torch.nonzero((channel_means < limit).all(dim=0)).flatten().tolist(), limit.item()

def skew_kurtosis(f):
    """Sample skewness and excess kurtosis of each column of f (N, D), in float64.

    skew = m3 / m2^1.5 and excess kurtosis = m4 / m2^2 - 3, with m_k the k-th central
    moment: both are 0 for a normal distribution. Constant columns give NaN.
    """
    f = np.asarray(f, dtype=np.float64)
    c = f - f.mean(axis=0)                                            # (N, D) centred
    m2, m3, m4 = (c ** 2).mean(0), (c ** 3).mean(0), (c ** 4).mean(0)  # (D,) each
    with np.errstate(divide='ignore', invalid='ignore'):
        return m3 / m2 ** 1.5, m4 / m2 ** 2 - 3

def normality_summary(f, within=0.5):
    """One line: how far the features in f (N, D) are from normal, feature by feature."""
    skew, kurt = skew_kurtosis(f)
    ok = np.isfinite(skew)  # constant (dead) features have no shape to speak of
    skew, kurt = skew[ok], kurt[ok]
    close = int(((np.abs(skew) <= within) & (np.abs(kurt) <= within)).sum())
    return (f'median |skew| {np.median(np.abs(skew)):.2f} | median |excess kurtosis| '
            f'{np.median(np.abs(kurt)):.2f} | {close}/{len(ok)} features within +-{within} on both'
            + (f' | {int((~ok).sum())} constant features left out' if not ok.all() else ''))

# -----------------------------------------------------------------------------
# the figures

def plot_maps(maps, path, title):
    """One row per digit, one column per channel, one colour scale for the whole level.

    The D x C small maps are tiled into one mosaic image with a 1-pixel gap (drawn white),
    which matplotlib draws in one call instead of D x C separate axes.
    """
    from matplotlib.figure import Figure  # no pyplot: nothing opens a window
    D, C, H, W = maps.shape
    mosaic = np.full((D * (H + 1) - 1, C * (W + 1) - 1), np.nan)      # NaN = gap
    for d in range(D):
        for c in range(C):
            mosaic[d * (H + 1):d * (H + 1) + H, c * (W + 1):c * (W + 1) + W] = maps[d, c].numpy()
    fig = Figure(figsize=(0.55 * C + 1, 0.55 * D + 1))
    ax = fig.subplots()
    ax.imshow(mosaic, cmap='viridis', vmin=0, vmax=np.nanmax(mosaic), interpolation='nearest')
    ax.set_xticks((W - 1) / 2 + (W + 1) * np.arange(C), [str(c) for c in range(C)], fontsize=8)
    ax.set_yticks((H - 1) / 2 + (H + 1) * np.arange(D), [str(d) for d in range(D)], fontsize=11)
    ax.tick_params(length=0, labeltop=True, labelbottom=False)
    ax.set_xlabel('channel'), ax.set_ylabel('digit')
    ax.xaxis.set_label_position('top')
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=10, pad=24)
    save_figure(fig, path)

def plot_histograms(f, path, bins=100):
    """A 4x4 grid: histograms of the first 16 features with the fitted normal density."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(12, 10), layout='constrained')
    axes = fig.subplots(4, 4)
    for k, ax in enumerate(axes.flat):
        v = f[:, k]
        ax.hist(v, bins=bins, density=True, histtype='stepfilled', color='tab:blue', alpha=0.6)
        mu, sigma = v.mean(), v.std()
        t = np.linspace(v.min(), v.max(), 200)
        ax.plot(t, np.exp(-0.5 * ((t - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi)), 'r')
        ax.set_title(f'feature {k}', fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle('features before the last ReLU (test set), with the fitted normal density')
    save_figure(fig, path)

# -----------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description='Mean activation maps, dead channels and feature '
                                     'normality of the trained classifier.',
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--checkpoint', default='out/classifier.pt', help='checkpoint written by train.py')
    parser.add_argument('--data-dir', default='data', help='folder with (or for) the four MNIST IDX files')
    parser.add_argument('--device', default='auto', help='auto (cuda, then mps, then cpu), or any torch device')
    parser.add_argument('--dead-threshold', type=float, default=0.01,
                        help="a channel is dead when its mean activation for every digit is below this "
                             "fraction of the level's largest")
    parser.add_argument('--out-dir', default='out', help='folder for the figures')
    args = parser.parse_args(argv)
    if not 0 <= args.dead_threshold < 1:
        parser.error(f'--dead-threshold must be a fraction in [0, 1), got {args.dead_threshold}')
    try:
        args.device = get_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    print(vars(args))
    t0 = time.perf_counter()

    try:
        model, ckpt = load_classifier(args.checkpoint, args.device)
        _, _, x_val, y_val = load_mnist(args.data_dir)
    except (FileNotFoundError, ValueError) as e:  # no checkpoint, a bad one, or no data
        parser.exit(1, f'error: {e}\n')
    print(f'loaded {args.checkpoint} (epoch {ckpt.get("epoch")}, val acc {100 * ckpt.get("val_acc", float("nan")):.2f}%)')
    x_val, y_val = x_val[:, None].to(args.device), y_val.to(args.device)   # (10000, 1, 32, 32)

    # 1. and 2.: mean maps per digit at each level, and the channels that never fire
    out = Path(args.out_dir)
    maps = mean_activations(model, x_val, y_val)
    for level, j in enumerate(LEVELS):
        m = maps[j]                                                        # (10, C, H, W)
        path = out / f'activations_level{level}.png'
        plot_maps(m, path, f'level {level}: layers[{j}], mean over the test images of each digit '
                           f'({m.shape[1]} channels of {m.shape[2]}x{m.shape[3]})')
        dead, limit = dead_channels(m, args.dead_threshold)
        print(f'level {level} (layers[{j}], {m.shape[1]} channels): dead channels {dead} '
              f'(mean activation < {limit:.4f} = {args.dead_threshold} x the largest, for every digit) | wrote {path}')

    # 3.: the 128-d features before and after the last ReLU, over the test set
    with torch.no_grad():
        f_pre = torch.cat([model.features(x_val[i:i + 1000]) for i in range(0, len(x_val), 1000)]).cpu().numpy()
        f_post = torch.cat([model.features(x_val[i:i + 1000], after_relu=True)
                            for i in range(0, len(x_val), 1000)]).cpu().numpy()   # (10000, 128)
    plot_histograms(f_pre, out / 'feature_histograms.png')
    print(f'wrote {out / "feature_histograms.png"}')
    print('before the ReLU (the blog\'s features): ' + normality_summary(f_pre))
    print('after the ReLU:                       ' + normality_summary(f_post))
    print(f'done in {time.perf_counter() - t0:.1f} s')


if __name__ == '__main__':
    main()
