"""
MNIST from the raw IDX bytes, as the "MNIST Dataset" section of the blog post "Latent
Diffusion Series: MNIST Classifier" (Nick Tasios) uses it, without torchvision; then the
small helpers every script shares (figures, downloads, safe writes, errors).

    python mnist.py        # print the split sizes, write out/mnist_samples.png

    from mnist import load_mnist
    x_train, y_train, x_val, y_val = load_mnist()   # (60000, 32, 32), (60000,), (10000, ...
"""

import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# the blog's path: the IDX bytes -> arrays -> x in [0, 1], padded to 32x32 -> the sample figure

# IDX element types (the header's third byte): bytes, then big-endian short, int, float, double
IDX_DTYPES = {0x08: np.dtype('u1'), 0x09: np.dtype('i1'), 0x0B: np.dtype('>i2'),
              0x0C: np.dtype('>i4'), 0x0D: np.dtype('>f4'), 0x0E: np.dtype('>f8')}

def parse_idx(raw, name):
    """The array stored in raw, the bytes of an IDX file; name is the file's, for errors."""
    check_idx(raw, name)  # only checks: after it, the header is valid and the data as declared
    # the header: two zero bytes, the element type (0x08 in MNIST: unsigned bytes), the number
    # of dimensions n, then the n sizes as big-endian 32-bit integers; then the elements, in order
    dtype, n = IDX_DTYPES[raw[2]], raw[3]
    shape = struct.unpack_from(f'>{n}I', raw, 4)                      # e.g. (60000, 28, 28)
    x = np.frombuffer(raw, dtype, offset=4 + 4 * n).reshape(shape)
    # a writable copy (from_numpy warns on read-only), in this machine's byte order (uint8: as is)
    return x.astype(dtype.newbyteorder('='))

def load_mnist(data_dir='data'):
    """The images x_train (60000, 32, 32) and x_val (10000, 32, 32), float32 in [0, 1], and their
    digits y_train (60000,) and y_val (10000,), int64. As in the blog, the test set validates."""
    # each file's bytes, read from data_dir (or downloaded there first) and unzipped, then parsed
    names = ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte',   # (60000, 28, 28), (60000,)
             't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']     # (10000, 28, 28), (10000,)
    arrays = [parse_idx(read_or_download(name, data_dir), name) for name in names]
    x_train, y_train, x_val, y_val = map(torch.from_numpy, arrays)
    # as in the blog: to [0, 1] (the post says [0, 1), but 255 / 255 = 1), then 2 zero pixels
    # a side, (N, 28, 28) -> (N, 32, 32), so the network's poolings divide evenly: 32, 16, 8, 2
    x_train, x_val = [F.pad(x.float() / 255, (2, 2, 2, 2)) for x in (x_train, x_val)]
    return x_train, y_train.long(), x_val, y_val.long()

def plot_samples(x, y, path, per_digit=10, seed=0):
    """The blog's figure of sample digits: for each digit in y (N,), a row of random images of it
    from x (N, 32, 32). randperm, unlike the blog's randint, never draws an image twice."""
    from matplotlib.figure import Figure  # not pyplot: nothing opens a window
    g = torch.Generator().manual_seed(seed)
    fig = Figure(figsize=(per_digit / 2, 5))
    axes = fig.subplots(10, per_digit)
    for digit in range(10):
        x_digit = x[y == digit]                                       # (N_digit, 32, 32)
        for ax, i in zip(axes[digit], torch.randperm(len(x_digit), generator=g)[:per_digit]):
            ax.imshow(x_digit[i].numpy(), cmap='gray', vmin=0, vmax=1)
            ax.axis('off')
    save_figure(fig, path)  # a PNG at path, written whole or not at all

def main(argv=None):
    args = parse_args(argv)  # the flags, at the end of the file
    x_train, y_train, x_val, y_val = load_mnist(args.data_dir)
    for split, x, y in (('train', x_train, y_train), ('val', x_val, y_val)):
        print(f'{split:5s}: x {tuple(x.shape)} {x.dtype}, y {tuple(y.shape)} {y.dtype} | '
              f'images per digit {torch.bincount(y, minlength=10).tolist()}')
    path = Path(args.out_dir) / 'mnist_samples.png'
    plot_samples(x_val, y_val, path, seed=args.seed)
    print(f'wrote {path}')

# -----------------------------------------------------------------------------
# beyond the blog: the figure helpers (a first reading can skip them). plot_tiles draws small
# images as one grid (the activation maps, the mistakes, the copies); save_figure saves one

def plot_tiles(tiles, path, title='', rows=(), cols=(), labels=(), cmap='gray', vmax=1.0):
    """Small images tiles (R, C, H, W) drawn as one grid image with 1-pixel gaps, and saved as
    a PNG; NaN pixels (gaps, empty tiles) are white. rows, cols: labels of the rows and columns
    of tiles; labels: R lists of C short texts for the tiles' corners; vmax=None: the largest."""
    from matplotlib.figure import Figure
    # the tiles as one image: each tile's pixel rows side by side across its grid row, with a
    # gap of one NaN pixel after every tile, then the last gaps cut off
    R, C, H, W = np.shape(tiles)
    grid = np.full((R, H + 1, C, W + 1), np.nan)                       # NaN = gap
    grid[:, :H, :, :W] = np.asarray(tiles, dtype=np.float64).transpose(0, 2, 1, 3)  # (R, H, C, W)
    grid = grid.reshape(R * (H + 1), C * (W + 1))[:-1, :-1]            # (R*(H+1)-1, C*(W+1)-1)
    # drawn with the row and column labels as ticks, the tiles' labels in their corners
    fig = Figure(figsize=(0.6 * C + 1, 0.6 * R + 1))
    ax = fig.subplots()
    ax.imshow(grid, cmap=cmap, vmin=0, vmax=np.nanmax(grid) if vmax is None else vmax,
              interpolation='nearest')
    ax.set_xticks((W - 1) / 2 + (W + 1) * np.arange(len(cols)), cols, fontsize=7)
    ax.set_yticks((H - 1) / 2 + (H + 1) * np.arange(len(rows)), rows, fontsize=9)
    ax.tick_params(length=0, labeltop=True, labelbottom=False)
    ax.spines[:].set_visible(False)
    for r, row in enumerate(labels):
        for c, text in enumerate(row):
            ax.text(c * (W + 1), r * (H + 1), text, color='yellow', fontsize=6, va='top')
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)

def save_figure(fig, path):
    """Save a matplotlib figure as a PNG file (through write_atomic)."""
    write_atomic(path, lambda tmp: fig.savefig(tmp, format='png', dpi=100, bbox_inches='tight'))

# -----------------------------------------------------------------------------
# plumbing: a first reading can skip the rest of this file. The MNIST files: read from data_dir,
# or downloaded there, checked by the SHA-256 of their decompressed content; an IDX file checked

import argparse
import gzip
import hashlib
import http.client
import math
import sys
import tempfile
import urllib.request
import zlib

SHA256 = {
    'train-images-idx3-ubyte': 'ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db',
    'train-labels-idx1-ubyte': '65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5',
    't10k-images-idx3-ubyte': '0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7',
    't10k-labels-idx1-ubyte': 'ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2',
}
MIRRORS = ['https://ossci-datasets.s3.amazonaws.com/mnist/',        # torchvision's first choice
           'https://storage.googleapis.com/cvdf-datasets/mnist/',
           'http://yann.lecun.com/exdb/mnist/']                       # the original, often down

def check_idx(raw, name):
    """Raise a ValueError naming the file unless raw is an IDX header and the bytes it declares."""
    n = raw[3] if len(raw) >= 4 else 0
    header = raw[:4 + 4 * n]
    if len(header) < 4 + 4 * n or header[:2] != b'\0\0' or header[2] not in IDX_DTYPES:
        raise ValueError(f'{name}: not an IDX file (its header: {header.hex(" ") or "none"})')
    shape, dtype = struct.unpack(f'>{n}I', header[4:]), IDX_DTYPES[header[2]]
    size = math.prod(shape) * dtype.itemsize
    if len(raw) - len(header) != size:
        raise ValueError(f'{name}: its header declares {shape} {dtype.name}, {size:,} bytes of '
                         f'data, but {len(raw) - len(header):,} bytes follow it')

def read_or_download(name, data_dir):
    """The bytes of the MNIST file name, from data_dir (gzipped or not) or downloaded, checked."""
    data_dir = Path(data_dir)
    if data_dir.is_file():
        raise ValueError(f'--data-dir {data_dir} is a file, not a folder for the MNIST files')
    path = next((p for p in (data_dir / f'{name}.gz', data_dir / name) if p.is_file()), None)
    if path is None:
        return download(name, data_dir)
    raw = path.read_bytes()
    try:
        raw = gzip.decompress(raw) if path.suffix == '.gz' else raw
    except (OSError, EOFError, zlib.error) as e:  # not gzip, cut short, damaged inside
        raise ValueError(f'{path}: not a readable gzip file ({e}); delete or replace it') from None
    if hashlib.sha256(raw).hexdigest() != SHA256[name]:
        raise ValueError(f'{path}: damaged or not the MNIST file {name} (its SHA-256 differs); '
                         f'delete it, and it is downloaded again')
    return raw

def download(name, data_dir):
    """The bytes of name.gz from the first mirror serving the right file, saved in data_dir."""
    for url in [mirror + f'{name}.gz' for mirror in MIRRORS]:
        print(f'downloading {url}')
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                gz = r.read()
            raw = gzip.decompress(gz)
        except (OSError, EOFError, zlib.error, http.client.HTTPException):
            continue  # no network, HTTP errors, timeouts, a cut download, not gzip
        if hashlib.sha256(raw).hexdigest() == SHA256[name]:
            write_atomic(data_dir / f'{name}.gz', lambda tmp: tmp.write_bytes(gz))
            return raw
    raise FileNotFoundError(f'{name}.gz is not in {data_dir}/ and no mirror served it; without '
                            f'internet, put the four MNIST files there: {", ".join(SHA256)} '
                            f'(gzipped as .gz or not)')

# safe writes, and errors in one line: what every script shares

def write_atomic(path, write):
    """Create or replace path by write(tmp) to a temporary file beside it, then one rename: never
    a half-written file, even on Ctrl-C. tmp keeps path's suffix, which np.savez goes by."""
    path = Path(path)
    tmp = path.with_name(f'.{path.stem}.tmp{path.suffix}')
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)

def check_writable(folder):
    """Make folder and write a file into it: learnt at the start, not after an hour of work."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:  # a file in the way, no permission, a read-only disk
        raise ValueError(f'cannot write into the folder {folder}: {e.strerror}') from None

def run_script(main, interrupted=''):
    """Run main(): a bad input is one line and exit 1, Ctrl-C 130 (+ interrupted); no traceback."""
    try:
        main()
    except (OSError, ValueError, FloatingPointError) as e:
        sys.exit(f'error: {e}')
    except KeyboardInterrupt:
        print(f'\ninterrupted: nothing half-written was left behind{interrupted}', file=sys.stderr)
        sys.exit(130)

# the command line: the flags, printed; the output folder checked before any work

def parse_args(argv):
    parser = argparse.ArgumentParser(description='Load MNIST and plot random test digits.',
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--data-dir', default='data', help='folder with (or for) the IDX files')
    parser.add_argument('--out-dir', default='out', help='folder for the figure')
    parser.add_argument('--seed', type=int, default=0, help='which random digits to plot')
    args = parser.parse_args(argv)
    print(vars(args))
    check_writable(args.out_dir)
    return args

if __name__ == '__main__':
    run_script(main)
