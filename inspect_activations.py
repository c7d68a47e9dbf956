"""
Look inside the trained classifier, as the "Evaluation" section of the blog post "Latent
Diffusion Series: MNIST Classifier" (Nick Tasios) does.

    python train.py                  # first: writes out/classifier.pt
    python inspect_activations.py    # figures in out/, numbers on stdout

1. Each pooling layer's mean output per digit (the blog's layers[2], [5], [8]): out/activations_level*.png.
2. Dead channels, near zero for every digit: the blog's "waste of memory/compute".
3. How normal the features are, as fid.py's Fréchet distance assumes, before and after the last ReLU:
   out/feature_histograms.png, skewness and excess kurtosis.
4. The mistakes: accuracy per digit, the most frequent confusions, and out/mistakes.png, like fastai's
   plot_top_losses.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mnist import check_writable, load_mnist, plot_tiles, save_figure
from model import get_device, load_classifier

# -----------------------------------------------------------------------------
# the blog's path: the mean activation maps per digit, and the feature histograms

@torch.no_grad()
def mean_activations(model, x, y, layers=None, batch_size=1000):
    """{layer index: (10, C, H, W) mean output per digit} of a model in eval mode (as load_classifier gives
    it), at the given layers or the pooling ones (model.levels())."""
    layers = model.levels() if layers is None else layers
    sums, counts = {}, torch.bincount(y.cpu(), minlength=10).double()   # (10,) images per digit
    for h, yb in zip(x.split(batch_size), y.split(batch_size)):     # (B, 1, 32, 32), (B,)
        for j, layer in enumerate(model.layers[:max(layers, default=-1) + 1]):
            h = layer(h)
            if j in layers:
                if j not in sums:  # float64 on the CPU: exact enough, and MPS has no float64
                    sums[j] = torch.zeros(10, *h.shape[1:], dtype=torch.float64)
                sums[j].index_add_(0, yb.cpu(), h.cpu().double())    # add each image to its digit's row
    assert (counts > 0).all(), 'every digit needs at least one image'
    return {j: (s / counts.view(10, 1, 1, 1)).float() for j, s in sums.items()}

def plot_maps(maps, path, title):
    """One row per digit, one column per channel, one colour scale for the whole level."""
    plot_tiles(maps, path, title, row_labels=[str(d) for d in range(len(maps))],
               col_labels=[str(c) for c in range(maps.shape[1])], xlabel='channel', ylabel='digit',
               cmap='viridis', vmax=None, inches=0.55)

def plot_histograms(f, path, bins=100):
    """A 4x4 grid: histograms of the first 16 features with the fitted normal density."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(12, 10), layout='constrained')
    for k, (ax, v) in enumerate(zip(fig.subplots(4, 4).flat, f.T)):   # fewer tiles for fewer features
        ax.hist(v, bins=bins, density=True, histtype='stepfilled', color='tab:blue', alpha=0.6)
        mu, sigma = v.mean(), v.std()
        if sigma > 0:                                                 # a constant feature has no curve
            t = np.linspace(v.min(), v.max(), 200)
            ax.plot(t, np.exp(-0.5 * ((t - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi)), 'r')
        ax.set_title(f'feature {k}', fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle('features before the last ReLU (test set), with the fitted normal density')
    save_figure(fig, path)

# -----------------------------------------------------------------------------
# beyond the blog: dead channels, how normal the features are, and the mistakes

def dead_channels(maps, threshold=0.01):
    """(the channels whose spatial mean of |maps| is at or below threshold x the level's largest for
    every digit, that limit); at or below, so an all-zero level is all dead and 0 finds exact zeros."""
    channel_means = maps.abs().mean(dim=(2, 3))                       # (10, C); abs: a negative channel fires too
    limit = threshold * channel_means.max()
    return torch.nonzero((channel_means <= limit).all(dim=0)).flatten().tolist(), limit.item()

def skew_kurtosis(f):
    """Sample skew = m3 / m2^1.5 and excess kurtosis = m4 / m2^2 - 3 (m_k: the k-th central moment)
    of each column of f (N, D), in float64: both 0 for a normal; NaN for a constant column."""
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
            f'{np.median(np.abs(kurt)):.2f} | {close}/{len(skew)} features within +-{within} on both'
            + (f' | {int((~ok).sum())} constant features left out' if not ok.all() else ''))

@torch.no_grad()
def predict(model, x, batch_size=1000):
    """The predicted digit (N,) and its softmax probability (N,) of each image, on the CPU."""
    was_training = model.training
    model.eval()
    confidence, pred = torch.cat([model(xb).softmax(1).cpu() for xb in x.split(batch_size)]).max(1)  # (N, 10) -> (N,)
    model.train(was_training)
    return pred, confidence

def confusion_matrix(y, pred, k=10):
    """(k, k) counts: row = the true digit, column = the predicted one."""
    return torch.bincount(y.cpu() * k + pred.cpu(), minlength=k * k).view(k, k)

def mistakes(y, pred, confidence):
    """Indices of the misclassified images, the most confident mistake first."""
    wrong = torch.nonzero(pred.cpu() != y.cpu()).flatten()            # (M,)
    return wrong[torch.argsort(confidence[wrong], descending=True, stable=True)]

def top_confusions(C, n=3):
    """The n most frequent (true, predicted, count) pairs off the diagonal of C."""
    counts, flat = C.clone().fill_diagonal_(0).flatten().sort(descending=True, stable=True)
    return [(int(i) // len(C), int(i) % len(C), int(c)) for c, i in zip(counts[:n], flat[:n]) if c > 0]

def plot_mistakes(x, y, pred, confidence, order, path, per_row=10):
    """The misclassified digits in the given order, each labelled 'true->predicted probability'."""
    n, y, pred, confidence = len(order), y.tolist(), pred.tolist(), confidence.tolist()
    rows = max(1, -(-n // per_row))                                   # ceil(n / per_row)
    tiles = np.full((rows * per_row, 28, 28), np.nan)                 # NaN tiles stay white
    tiles[:n] = x[order, 0, 2:30, 2:30].cpu().numpy()                 # (n, 28, 28) without the padding
    labels = [f'{y[i]}->{pred[i]} {confidence[i]:.2f}' for i in order.tolist()] + [''] * (rows * per_row - n)
    plot_tiles(tiles.reshape(rows, per_row, 28, 28), path,
               f'the {n} most confident mistakes (true->predicted, probability)',
               tile_labels=[labels[r * per_row:(r + 1) * per_row] for r in range(rows)], inches=1.0)

# -----------------------------------------------------------------------------
# the command; plumbing: a first reading can skip main()'s flag checks and read run(), steps 1-4 above

def main(argv=None):
    parser = argparse.ArgumentParser(description='Mean activation maps, dead channels and feature normality of '
                                     'the trained classifier.', formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--checkpoint', default='out/classifier.pt', help='checkpoint written by train.py')
    parser.add_argument('--data-dir', default='data', help='folder with (or for) the four MNIST IDX files')
    parser.add_argument('--device', default='auto', help='auto (cuda, then mps, then cpu), or any torch device')
    parser.add_argument('--dead-threshold', type=float, default=0.01, help="a channel is dead when its mean "
                        "activation for every digit is at or below this fraction of the level's largest")
    parser.add_argument('--mistakes', type=int, default=100,
                        help='how many misclassified digits to draw, the most confident first')
    parser.add_argument('--out-dir', default='out', help='folder for the figures')
    args = parser.parse_args(argv)
    if not 0 <= args.dead_threshold < 1:
        parser.error(f'--dead-threshold must be a fraction in [0, 1), got {args.dead_threshold}')
    if args.mistakes < 1:
        parser.error(f'--mistakes must be at least 1, got {args.mistakes}')
    try:
        args.device = get_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    print(vars(args))
    try:
        run(args)
    except (FileNotFoundError, ValueError) as e:  # no checkpoint, a bad one, no data, no place to write
        parser.exit(1, f'error: {e}\n')
    except KeyboardInterrupt:
        parser.exit(130, '\ninterrupted: nothing half-written was left behind\n')

@torch.no_grad()
def run(args):
    """main()'s work, once the flags are checked."""
    t0 = time.perf_counter()
    check_writable(args.out_dir)                                       # before any work
    model, ckpt = load_classifier(args.checkpoint, args.device)   # refused if model.py changed since
    _, _, x_val, y_val = load_mnist(args.data_dir)
    acc = '' if ckpt.get('val_acc') is None else f', val acc {100 * ckpt["val_acc"]:.2f}%'
    print(f'loaded {args.checkpoint} (epoch {ckpt.get("epoch")}{acc}) | network: {model.summary()}')
    x_val, y_val = x_val[:, None].to(args.device), y_val.to(args.device)   # (10000, 1, 32, 32)

    # 1. and 2.: mean maps per digit at each level, and the channels that never fire
    out = Path(args.out_dir)
    maps = mean_activations(model, x_val, y_val)                      # {index of a pooling layer: (10, C, H, W)}
    if not maps:
        print('the network has no pooling layers (model.POOLING): no activation maps to draw')
    for level, (j, m) in enumerate(maps.items()):
        path = out / f'activations_level{level}.png'
        plot_maps(m, path, f'level {level}: layers[{j}], mean over the test images of each digit '
                           f'({m.shape[1]} channels of {m.shape[2]}x{m.shape[3]})')
        dead, limit = dead_channels(m, args.dead_threshold)
        print(f'level {level} (layers[{j}], {m.shape[1]} channels): dead channels {dead} '
              f'(mean activation <= {limit:.4f} = {args.dead_threshold} x the largest, for every digit) | wrote {path}')
    for stale in sorted(out.glob('activations_level*.png')):          # a deeper network's would read as this one's
        level = stale.stem.removeprefix('activations_level')
        if level.isdigit() and int(level) >= len(maps):
            stale.unlink()
            print(f'removed {stale}: this network has {len(maps)} levels')

    # 3.: the features before and after the last ReLU, over the test set
    f_pre, f_post = [torch.cat([model.features(xb, after_relu) for xb in x_val.split(1000)]).cpu().numpy()
                     for after_relu in (False, True)]                  # (10000, D) each
    plot_histograms(f_pre, out / 'feature_histograms.png')
    print(f'wrote {out / "feature_histograms.png"}')
    print('before the ReLU (the blog\'s features): ' + normality_summary(f_pre))
    print('after the ReLU:                       ' + normality_summary(f_post))

    # 4.: what the classifier gets wrong, and how sure it was
    pred, confidence = predict(model, x_val)                           # (10000,), (10000,)
    C = confusion_matrix(y_val, pred)                                  # (10, 10)
    print(f'accuracy {100 * C.trace() / C.sum():.2f}% | per digit: '      # per digit: its recall
          + ' | '.join(f'{d} {100 * a:.1f}%' for d, a in enumerate((C.diag() / C.sum(1)).tolist())))
    order = mistakes(y_val, pred, confidence)
    print(f'{len(order)} mistakes; the most frequent: '
          + ', '.join(f'{t} -> {p}: {c}' for t, p, c in top_confusions(C)))
    shown = order[:args.mistakes]                                      # the most confident ones
    plot_mistakes(x_val, y_val, pred, confidence, shown, out / 'mistakes.png')
    print(f'wrote {out / "mistakes.png"} ({len(shown)} of the {len(order)} mistakes)')
    print(f'done in {time.perf_counter() - t0:.1f} s')

if __name__ == '__main__':
    main()
