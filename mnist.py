"""
MNIST from the raw bytes, as the blog's "MNIST Dataset" section uses it: an IDX parser, the
loader every script uses, the blog's first figure, and under a ruler the plumbing they share.

    python mnist.py                 # print the split sizes, write out/mnist_samples.png

An IDX file (http://yann.lecun.com/exdb/mnist/, usually gzipped) is a tiny big-endian header and
one flat array; each is verified by the SHA-256 of its *decompressed* content, so any correct copy
is accepted. As in the blog post "Latent Diffusion Series: MNIST Classifier" (Nick Tasios), the
28x28 images are scaled to [0, 1] and padded with 2 zero pixels on each side to 32x32, so that
the network's two halvings and final 4x4 average (32 -> 16 -> 8 -> 2) divide evenly.
"""

import argparse
import errno
import gzip
import hashlib
import math
import os
import struct
import sys
import tempfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# the dataset: file names, the checksums of their decompressed content, and mirrors

SHA256 = {
    'train-images-idx3-ubyte': 'ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db',
    'train-labels-idx1-ubyte': '65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5',
    't10k-images-idx3-ubyte': '0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7',
    't10k-labels-idx1-ubyte': 'ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2',
}
MIRRORS = [
    'https://ossci-datasets.s3.amazonaws.com/mnist/',  # the one torchvision tries first
    'https://storage.googleapis.com/cvdf-datasets/mnist/',
    'http://yann.lecun.com/exdb/mnist/',  # the original; often rate-limited or down
]

# IDX element types (the header's third byte): bytes, then big-endian short, int, float, double
IDX_DTYPES = {0x08: np.dtype('u1'), 0x09: np.dtype('i1'), 0x0B: np.dtype('>i2'),
              0x0C: np.dtype('>i4'), 0x0D: np.dtype('>f4'), 0x0E: np.dtype('>f8')}

# -----------------------------------------------------------------------------
# the blog's path: the IDX bytes -> load_mnist (scaled to [0, 1], padded to 32x32) -> a figure

def parse_idx(raw, name='<bytes>'):
    """Parse the bytes of an IDX file into a numpy array of the declared shape and dtype."""
    # the header: 2 zero bytes, 1 byte element type, 1 byte number of dimensions
    if len(raw) < 4:
        raise ValueError(f'{name}: only {len(raw)} bytes: empty or too short for the 4-byte IDX header')
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f'{name}: not an IDX file (its first two bytes are {raw[:2].hex(" ")}, not 00 00)')
    type_code, ndim = raw[2], raw[3]
    if type_code not in IDX_DTYPES:
        known = ', '.join(f'{c:#04x}' for c in IDX_DTYPES)
        raise ValueError(f'{name}: unknown IDX element type {type_code:#04x} (expected one of {known})')
    if ndim == 0:
        raise ValueError(f'{name}: the IDX header declares zero dimensions')
    header_len = 4 + 4 * ndim  # then one 32-bit big-endian size per dimension
    if len(raw) < header_len:
        raise ValueError(f'{name}: the file ends after {len(raw)} bytes, inside the header of {ndim} dimensions')
    shape = struct.unpack(f'>{ndim}I', raw[4:header_len])
    dtype = IDX_DTYPES[type_code]
    # compare the declared size with the bytes we have *before* allocating: a corrupt header costs nothing
    n = math.prod(shape)  # python ints: no overflow
    expected, actual = n * dtype.itemsize, len(raw) - header_len
    if actual < expected:
        raise ValueError(f'{name}: truncated: shape {shape} {dtype.name} needs {expected:,} bytes, {actual:,} follow')
    if actual > expected:
        raise ValueError(f'{name}: {actual - expected:,} unexpected bytes after the data of shape {shape}')
    # the data, row-major; astype makes a writable copy in the machine's byte order
    return np.frombuffer(raw, dtype=dtype, count=n, offset=header_len).reshape(shape).astype(dtype.newbyteorder('='))

def pad(x):
    """(N, 28, 28) -> (N, 32, 32): 2 zero pixels on each side, as in the blog."""
    return F.pad(x, (2, 2, 2, 2))

def load_split(images_name, labels_name, data_dir, mirrors, sha256):
    """One split: verified images and labels -> x (N, 32, 32) float32, y (N,) int64."""
    images = read_verified(images_name, data_dir, mirrors, sha256[images_name])  # (N, 28, 28) uint8
    labels = read_verified(labels_name, data_dir, mirrors, sha256[labels_name])  # (N,) uint8
    assert images.shape[1:] == (28, 28) and len(images) == len(labels), 'the checksums pin this: MNIST'
    x = pad(torch.from_numpy(images).float() / 255)  # (N, 32, 32) float32 in [0, 1]
    y = torch.from_numpy(labels).long()               # (N,) int64
    return x, y

def load_mnist(data_dir='data', mirrors=MIRRORS, sha256=SHA256):
    """Return x_train (60000, 32, 32), y_train (60000,), x_val (10000, 32, 32), y_val (10000,):
    pixel / 255 as float32, padded to 32x32; int64 labels. Like the blog, the test set validates."""
    if Path(data_dir).exists() and not Path(data_dir).is_dir():
        raise ValueError(f'{data_dir} is a file, not a folder for the MNIST files')
    x_train, y_train = load_split('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', data_dir, mirrors, sha256)
    x_val, y_val = load_split('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte', data_dir, mirrors, sha256)
    return x_train, y_train, x_val, y_val

def plot_samples(x, y, path, per_digit=10, seed=0):
    """The blog's first figure: one row per digit, random images of that digit (drawn by plot_tiles)."""
    g = torch.Generator().manual_seed(seed)
    tiles = []
    for digit in range(10):
        idx = torch.nonzero(y == digit).squeeze(1)               # (n_digit,)
        tiles.append(x[idx[torch.randperm(len(idx), generator=g)[:per_digit]]])  # (per_digit, 32, 32)
    plot_tiles(torch.stack(tiles), path, row_labels=[str(d) for d in range(10)], ylabel='digit')

def main(argv=None):
    parser = argparse.ArgumentParser(description='Load MNIST and plot random test digits.',
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--data-dir', default='data', help='folder with (or for) the four IDX files')
    parser.add_argument('--out-dir', default='out', help='folder for the figure')
    parser.add_argument('--seed', type=seed_arg, default=0, help='which random digits to plot')
    args = parser.parse_args(argv)
    print(vars(args))
    try:
        check_writable(args.out_dir)
        x_train, y_train, x_val, y_val = load_mnist(args.data_dir)
    except (FileNotFoundError, ValueError) as e:  # no files and no network, a bad file, no place to write
        parser.exit(1, f'error: {e}\n')
    except KeyboardInterrupt:
        parser.exit(130, '\ninterrupted: nothing half-written was left behind\n')
    print(f'train: x {tuple(x_train.shape)} {x_train.dtype}, y {tuple(y_train.shape)} {y_train.dtype}')
    print(f'val:   x {tuple(x_val.shape)} {x_val.dtype}, y {tuple(y_val.shape)} {y_val.dtype}')
    print('train images per digit:', torch.bincount(y_train, minlength=10).tolist())
    print('val images per digit:  ', torch.bincount(y_val, minlength=10).tolist())
    path = Path(args.out_dir) / 'mnist_samples.png'
    plot_samples(x_val, y_val, path, seed=args.seed)
    print(f'wrote {path}')

# -----------------------------------------------------------------------------
# plumbing: a first reading can skip the rest of this file.
# Finding, downloading and verifying the four files

def download(name, data_dir, mirrors, sha256, timeout=60):
    """Download name.gz from the first mirror that serves a verified copy; return its path.
    It is verified in memory, then written atomically: data_dir never holds a bad or partial file."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    final = data_dir / f'{name}.gz'
    errors = [f'could not download {final.name}:']
    for mirror in mirrors:
        url = mirror + final.name
        print(f'downloading {url}')
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                raw = r.read()
            digest = hashlib.sha256(gunzip(raw, url)).hexdigest()
            if digest != sha256:
                raise ValueError(f'wrong content (SHA-256 {digest}, expected {sha256})')
        except (OSError, ValueError) as e:  # URLError, HTTPError, timeouts are OSErrors
            errors.append(f'  {url}: {e}')
            continue
        write_atomic(final, lambda tmp: tmp.write_bytes(raw))
        return final
    advice = [f'Without internet, put the four MNIST files (gzipped or not) into {data_dir.resolve()}/ yourself:',
              *(f'  {n}.gz' for n in SHA256), 'They are served by:', *(f'  {m}' for m in mirrors)]
    raise FileNotFoundError('\n'.join(errors + advice))

def read_verified(name, data_dir, mirrors, sha256):
    """The verified IDX array in data_dir as name.gz, or decompressed as name; downloaded if absent."""
    path = next((p for p in (Path(data_dir) / f'{name}.gz', Path(data_dir) / name) if p.is_file()), None)
    path = path or download(name, data_dir, mirrors, sha256)
    try:
        return read_idx(path, sha256)
    except ValueError as e:  # not gzip, corrupt gzip, or not this file
        raise ValueError(f'{e}. Delete it so that it is downloaded again, or replace it.') from None

def read_idx(path, sha256=None):
    """An IDX file (gzipped if named .gz) as a numpy array; with sha256, only if that is its content's SHA-256."""
    path = Path(path)
    raw = path.read_bytes()
    raw = gunzip(raw, path) if path.suffix == '.gz' else raw
    if sha256 and (digest := hashlib.sha256(raw).hexdigest()) != sha256:
        raise ValueError(f'{path}: wrong content: the SHA-256 of its decompressed data is {digest}, '
                         f'expected {sha256}; it is corrupt or not this MNIST file')
    return parse_idx(raw, path)

def gunzip(raw, name):
    """Decompress gzip bytes; a file that is not gzip or is corrupt gets one ValueError."""
    if raw[:2] != b'\x1f\x8b':
        why = 'the file is empty' if not raw else 'it does not start with the magic bytes 1f 8b'
        raise ValueError(f'{name}: not a gzip file ({why}), although its name ends in .gz')
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # bad header, cut short, bad CRC, bad data
        raise ValueError(f'{name}: corrupt gzip data ({e})') from None

# writing and reading files: one way to succeed, one way to fail (see the README's guarantees)

def write_atomic(path, write):
    """Create or replace path: write(tmp) fills a temporary file beside it, one rename puts it in place.
    On any failure (Ctrl-C too) tmp is removed; a failure to write is one ValueError naming path."""
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.tmp')
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, 'a folder is in the way')
        make_folder(path.parent)
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp.is_file():
            tmp.unlink()
        if isinstance(e, (OSError, RuntimeError)):  # torch.save reports a full disk as RuntimeError
            raise ValueError(f'cannot write {path}: {reason(e)}') from None
        raise

def make_folder(folder):
    """folder.mkdir(parents=True), but naming the file that stands where folder or a parent should be."""
    for p in [folder, *folder.parents]:
        if p.exists() and not p.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f'{p} is a file, not a folder')
    folder.mkdir(parents=True, exist_ok=True)

def check_writable(folder):
    """Make folder and write a test file in it: a run learns at its start that it could not save."""
    folder = Path(folder)
    try:
        make_folder(folder)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix='.write-test-')
        os.close(fd)
        os.remove(tmp)
    except OSError as e:
        raise ValueError(f'cannot write into {folder}/: {reason(e)}') from None

def read_file(path, read, expected):
    """read(path); a failure to read or parse it is one ValueError naming path and what was expected."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'{path}: no such file')
    try:
        return read(path)
    except Exception as e:  # zip, pickle, numpy, torch: each fails its own way
        raise ValueError(f'{path}: not {expected} ({reason(e)})') from None

def save_npz(path, **arrays):
    """Write arrays as one .npz file (mnist.write_atomic: complete or not at all)."""
    def write(tmp):
        with open(tmp, 'wb') as fh:  # a file object: np.savez would append .npz to a name
            np.savez(fh, **arrays)
    write_atomic(path, write)

def load_npz(path):
    """{name: array} of a .npz file, read whole; one ValueError naming it when it is damaged."""
    def read(p):
        z = np.load(p, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError(f'a single {type(z).__name__}, not an archive of arrays')
        with z:
            return {k: z[k] for k in z.files}
    return read_file(path, read, 'a readable .npz file')

def cached(path, build, **key):
    """The arrays cached at path if written with this key (scalars naming what made them), else
    build()'s, saved there; a stale, damaged or foreign file is rebuilt with a one-line notice."""
    try:
        z = load_npz(path)
        if all(k in z and z[k].ndim == 0 and z[k].item() == v for k, v in key.items()):
            return z
        print(f'{path} was made by another classifier, data or version: recomputing', file=sys.stderr)
    except FileNotFoundError:
        pass
    except ValueError:  # cut short, overwritten, not written by us
        print(f'{path} is damaged or not a cache written by this code: recomputing', file=sys.stderr)
    z = build()
    save_npz(path, **z, **key)
    print(f'wrote {path}', file=sys.stderr)
    return z

def reason(e):
    """The cause of an exception in one line, for a one-line error."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).split('WeightsUnpickler error:', 1)[-1]  # PyTorch's weights_only paragraph: only its cause
    return next((line.strip() for line in text.splitlines() if line.strip()), type(e).__name__)

# figures, and the --seed flag of every script

def save_figure(fig, path):
    """Save a matplotlib figure as PNG via a temporary name and a rename."""
    write_atomic(path, lambda tmp: fig.savefig(tmp, format='png', dpi=100, bbox_inches='tight'))

def tile_mosaic(tiles):
    """Tiles (R, C, H, W) -> one (R*(H+1)-1, C*(W+1)-1) image, NaN in the 1-pixel gaps between them."""
    tiles = np.asarray(tiles, dtype=np.float64)
    R, C, H, W = tiles.shape
    grid = np.full((R, H + 1, C, W + 1), np.nan)                      # NaN = gap
    grid[:, :H, :, :W] = tiles.transpose(0, 2, 1, 3)                  # (R, H, C, W)
    return grid.reshape(R * (H + 1), C * (W + 1))[:-1, :-1]

def plot_tiles(tiles, path, title=None, row_labels=None, col_labels=None, tile_labels=None,
               xlabel=None, ylabel=None, cmap='gray', vmin=0.0, vmax=1.0, inches=0.8):
    """Draw small images tiles (R, C, H, W) as one mosaic (one imshow, not R x C axes) and save
    it as a PNG. NaN pixels (the gaps, missing tiles) are white. tile_labels: R x C short strings
    for the tiles' top-left corners. vmax=None takes the largest value; inches: one tile's size."""
    from matplotlib.figure import Figure  # no pyplot: nothing opens a window
    R, C, H, W = np.shape(tiles)
    mosaic = tile_mosaic(tiles)                                       # (R*(H+1)-1, C*(W+1)-1)
    fig = Figure(figsize=(inches * C + 1, inches * R + 1))
    ax = fig.subplots()
    ax.imshow(mosaic, cmap=cmap, vmin=vmin, vmax=np.nanmax(mosaic) if vmax is None else vmax, interpolation='nearest')
    # tick labels at the centre of each row and column of tiles
    ax.set_xticks((W - 1) / 2 + (W + 1) * np.arange(C), col_labels or [''] * C, fontsize=8)
    ax.set_yticks((H - 1) / 2 + (H + 1) * np.arange(R), row_labels or [''] * R, fontsize=11)
    ax.tick_params(length=0, labeltop=True, labelbottom=False)
    ax.set(xlabel=xlabel or '', ylabel=ylabel or '')
    ax.xaxis.set_label_position('top')
    ax.spines[:].set_visible(False)
    for r, row in enumerate(tile_labels or []):
        for c, text in enumerate(row):
            ax.text(c * (W + 1), r * (H + 1), text, color='yellow', fontsize=7, va='top')
    ax.set_title(title or '', fontsize=10, pad=24 if col_labels else 6)
    save_figure(fig, path)

def seed_arg(text):
    """argparse type of every --seed: a whole number torch.manual_seed takes, [0, 2**64)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a whole number') from None
    if not 0 <= value < 2 ** 64:
        raise argparse.ArgumentTypeError(f'{value} is not in [0, 2**64), the seeds torch.manual_seed takes')
    return value

if __name__ == '__main__':
    main()
