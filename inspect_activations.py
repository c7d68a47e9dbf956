"""
Look inside the trained classifier, as the "Evaluation" section of the blog post "Latent
Diffusion Series: MNIST Classifier" (Nick Tasios) does.

    python inspect_activations.py    # figures in out/, numbers on stdout

1. The mean output of each pooling layer per digit: out/activations_level{0,1,2}.png.
2. Dead channels, near zero for every digit: the blog's "waste of memory/compute".
3. The features' histograms (out/feature_histograms.png), how normal before and after the ReLU.
4. The mistakes: the accuracy per digit, the most frequent confusions, and out/mistakes.png.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mnist import check_writable, load_mnist, plot_tiles, run_script, save_figure
from model import POOLING, default_checkpoint, get_device, load_classifier, summary

# -----------------------------------------------------------------------------
# the blog's path: the mean activation maps per digit, the feature histograms, and main. Steps 2
# and 4 of the docstring, and step 3's numbers, go beyond the blog; their functions come after

@torch.no_grad()
def mean_activations(model, x, y):
    """The mean output of each pooling layer for each digit, over the images x (N, 1, 32, 32)
    with digits y (N,), for a model in eval mode. A dict: the layer's index in model.levels ->
    a (10, C, H, W) tensor."""
    maps = {}
    for digit in range(10):
        # the blog's loop: a digit's images through the layers one by one (the blog's 0 to 8),
        # keeping the mean output of each pooling layer (the blog's layers 2, 5 and 8)
        h = x[y == digit]                                             # (N_digit, 1, 32, 32)
        for i, layer in enumerate(model.levels):
            h = layer(h)
            if isinstance(layer, POOLING):                            # h: (N_digit, C, H, W)
                maps.setdefault(i, []).append(h.mean(0).cpu())        # (C, H, W)
    return {i: torch.stack(m) for i, m in maps.items()}              # {i: (10, C, H, W)}

def plot_maps(maps, path, title):
    """The blog's figure of maps (10, C, H, W): a row per digit, a column per channel, drawn with
    one colour scale. mnist.plot_tiles lays out the grid; a first reading can skip how."""
    plot_tiles(maps, path, title, rows=range(10), cols=range(maps.shape[1]), cmap='viridis',
               vmax=None)

def plot_histograms(f, path, title, bins=100):
    """The blog's 4x4 grid of histograms of the first 16 features f (N, D). In the blog's
    network, feature k is channel k // 4 at position k % 4 of its 2x2 map."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(12, 10))
    for k, (ax, v) in enumerate(zip(fig.subplots(4, 4, gridspec_kw={'hspace': 0.3}).flat,
                                    f[:, :16].T)):
        ax.hist(v, bins=bins)
        ax.set_title(f'feature {k}', fontsize=9)
        ax.set_yticks([])                                             # counts: the shape matters
    fig.suptitle(title)
    save_figure(fig, path)

def main(argv=None):
    args = parse_args(argv)  # the flags, at the end of the file
    t0, out = time.perf_counter(), Path(args.out_dir)
    # the trained model in eval mode (out/classifier.pt if you trained one, else the shared
    # classifier), and its checkpoint: the dict train.py saved; we print its epoch and val_acc
    model, ckpt = load_classifier(args.checkpoint, args.device)
    acc = '' if ckpt['val_acc'] is None else f', val acc {ckpt["val_acc"]:.2%}'
    print(f'loaded {args.checkpoint} (epoch {ckpt["epoch"]}{acc}) | network: {summary(model)}')
    _, _, x_val, y_val = load_mnist(args.data_dir)
    x_val, y_val = x_val[:, None].to(args.device), y_val.to(args.device)   # (10000, 1, 32, 32)

    # the blog's figures: the mean maps per digit at each level, the features' histograms
    maps = mean_activations(model, x_val, y_val)                      # {index: (10, C, H, W)}
    for level, (i, m) in enumerate(maps.items()):
        path = out / f'activations_level{level}.png'
        plot_maps(m, path, f'level {level}: levels[{i}], mean over the test images of each '
                           f'digit ({m.shape[1]} channels of {m.shape[2]}x{m.shape[3]})')
        print(f'wrote {path}')
    with torch.no_grad():
        before, after = (f.cpu().numpy() for f in model.features(x_val))   # (10000, 128) each
    plot_histograms(before, out / 'feature_histograms.png', 'the features before the last ReLU')
    print(f'wrote {out / "feature_histograms.png"}')

    # beyond the blog (the functions after the ruler below): the channels that never fire, how
    # normal the features are, and what the classifier gets wrong
    for level, (i, m) in enumerate(maps.items()):
        dead, limit = dead_channels(m, args.dead_threshold)
        print(f'level {level} (levels[{i}], {m.shape[1]} channels): dead channels {dead} (mean '
              f'activation <= {limit:.4f} = {args.dead_threshold} x the largest, for every digit)')
    print("before the ReLU (the blog's features): " + normality_summary(before))
    print('after the ReLU:                       ' + normality_summary(after))
    print_mistakes(model, x_val, y_val.cpu(), out / 'mistakes.png', args.mistakes)
    print(f'done in {time.perf_counter() - t0:.1f} s')

# -----------------------------------------------------------------------------
# beyond the blog: dead channels, how normal the features are, and the mistakes

def dead_channels(maps, threshold=0.01):
    """(the channels of maps (10, C, H, W) whose mean |map| over its pixels is at most threshold
    x the level's largest for every digit, that limit); an all-zero level is all dead."""
    channel_means = maps.abs().mean(dim=(2, 3))          # (10, C); abs: a negative one fires too
    limit = threshold * channel_means.max()
    return torch.nonzero((channel_means <= limit).all(dim=0)).flatten().tolist(), limit.item()

def skew_kurtosis(f):
    """Skewness m3 / m2^1.5 and excess kurtosis m4 / m2^2 - 3 (m_k: the k-th central moment) of
    each column of f (N, D), in float64: both 0 for a normal; NaN for a constant column."""
    c = f - f.mean(axis=0, dtype=np.float64)                          # (N, D) centred
    m2, m3, m4 = (c ** 2).mean(0), (c ** 3).mean(0), (c ** 4).mean(0)  # (D,) each
    with np.errstate(divide='ignore', invalid='ignore'):
        return m3 / m2 ** 1.5, m4 / m2 ** 2 - 3

def normality_summary(f, within=0.5):
    """One line: how far the features f (N, D) are from normal, feature by feature."""
    skew, kurt = skew_kurtosis(f)
    ok = np.isfinite(skew)                         # constant (dead) features have no shape
    skew, kurt = np.abs(skew[ok]), np.abs(kurt[ok])
    close = int(((skew <= within) & (kurt <= within)).sum())
    return (f'median |skew| {np.median(skew):.2f} | median |excess kurtosis| {np.median(kurt):.2f}'
            f' | {close}/{len(skew)} features within +-{within} on both'
            + (f' | {int((~ok).sum())} constant features left out' if not ok.all() else ''))

def print_mistakes(model, x, y, path, n=100):
    """Step 4 for x (N, 1, 32, 32), y (N,): accuracy per digit, top confusions, the figure."""
    pred, confidence = predict(model, x)                              # (N,) each
    C = confusion_matrix(y, pred)                                     # (10, 10)
    recall = (C.diag() / C.sum(1)).tolist()                           # the accuracy per digit
    print(f'accuracy {100 * C.trace() / C.sum():.2f}% | per digit: '
          + ' | '.join(f'{d} {100 * a:.1f}%' for d, a in enumerate(recall)))
    print(f'{int(C.sum() - C.trace())} mistakes; the most frequent: '
          + ', '.join(f'{t} -> {p}: {c}' for t, p, c in top_confusions(C)))
    shown = plot_mistakes(x.cpu(), y, pred, confidence, path, n)
    print(f'wrote {path} (the {shown} most confident mistakes)')

@torch.no_grad()
def predict(model, x, batch_size=1000):
    """The predicted digit (N,) and its softmax probability (N,) of each image, on the CPU."""
    probs = torch.cat([model(xb).softmax(1).cpu() for xb in x.split(batch_size)])   # (N, 10)
    confidence, pred = probs.max(1)
    return pred, confidence

def confusion_matrix(y, pred):
    """(10, 10) counts: row = the true digit, column = the predicted one."""
    return torch.bincount(y * 10 + pred, minlength=100).view(10, 10)

def top_confusions(C, n=3):
    """The n most frequent (true, predicted, count) off the diagonal of C, if their count > 0."""
    counts, flat = C.clone().fill_diagonal_(0).flatten().sort(descending=True, stable=True)
    return [(int(i) // 10, int(i) % 10, int(c)) for c, i in zip(counts[:n], flat[:n]) if c > 0]

def plot_mistakes(x, y, pred, confidence, path, n=100, per_row=10):
    """The n most confident mistakes, each labelled 'true->predicted probability'."""
    wrong = torch.nonzero(pred != y).flatten()                        # (M,)
    order = wrong[confidence[wrong].argsort(descending=True, stable=True)][:n]
    rows = max(1, -(-len(order) // per_row))                          # ceil(len(order) / per_row)
    tiles = np.full((rows * per_row, 28, 28), np.nan)                  # NaN tiles stay white
    tiles[:len(order)] = x[order, 0, 2:30, 2:30].numpy()               # without the padding
    labels = [f'{y[i]}->{pred[i]} {confidence[i]:.2f}' for i in order.tolist()]
    plot_tiles(tiles.reshape(rows, per_row, 28, 28), path,
               f'the {len(order)} most confident of {len(wrong)} mistakes (true->predicted, '
               f'probability)', labels=[labels[r * per_row:(r + 1) * per_row] for r in range(rows)])
    return len(order)

# -----------------------------------------------------------------------------
# plumbing: a first reading can skip the rest of this file. The flags, printed; the device
# picked, the output folder checked

def parse_args(argv):
    parser = argparse.ArgumentParser(description='Look inside the trained classifier.',
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--checkpoint', default=default_checkpoint(),
                        help='yours (train.py writes it) if there, else the shared classifier')
    parser.add_argument('--data-dir', default='data', help='folder with (or for) the IDX files')
    parser.add_argument('--device', default='auto', help='auto: cuda, then mps, then cpu')
    parser.add_argument('--dead-threshold', type=float, default=0.01, help='of the largest mean')
    parser.add_argument('--mistakes', type=int, default=100, help='how many mistakes to draw')
    parser.add_argument('--out-dir', default='out', help='folder for the figures')
    args = parser.parse_args(argv)
    args.device = get_device(args.device)
    print(vars(args))
    check_writable(args.out_dir)
    return args

if __name__ == '__main__':
    run_script(main)
