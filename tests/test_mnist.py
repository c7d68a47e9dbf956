"""
Tests for mnist.py: the IDX parser on files written here (every element type, every kind of
bad file), the loader on small fake MNIST files, downloads from a local HTTP server, the real
files in data/, the sample figure, and the helpers every script shares.
"""

import functools
import gzip
import hashlib
import http.server
import struct
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import mnist
from mnist import check_writable, load_mnist, parse_idx, read_or_download, run_script, write_atomic

# -----------------------------------------------------------------------------
# IDX files written here, independently of mnist.py

TYPE_CODES = {'u1': 0x08, 'i1': 0x09, 'i2': 0x0B, 'i4': 0x0C, 'f4': 0x0D, 'f8': 0x0E}

def idx_bytes(x):
    """The IDX encoding of array x: zero, zero, type code, ndim, big-endian sizes, data."""
    header = bytes([0, 0, TYPE_CODES[x.dtype.str[1:]], x.ndim])
    sizes = struct.pack(f'>{x.ndim}I', *x.shape)
    return header + sizes + x.astype(x.dtype.newbyteorder('>')).tobytes()

@pytest.mark.parametrize('dtype', ['u1', 'i1', '<i2', '<i4', '<f4', '<f8'])
def test_round_trip_every_type(dtype):
    x = (np.random.default_rng(0).standard_normal((3, 4, 5)) * 100).astype(dtype)
    y = parse_idx(idx_bytes(x), 'x')
    assert y.shape == x.shape and y.dtype == np.dtype(dtype).newbyteorder('=')
    np.testing.assert_array_equal(y, x)
    y[0, 0, 0] = 1                                    # writable: not a view of the file's bytes

@pytest.mark.parametrize('shape', [(7,), (2, 3), (2, 1, 3, 2), (1, 1, 1, 1, 2)])
def test_round_trip_any_number_of_dimensions(shape):
    x = np.arange(np.prod(shape), dtype='>i4').reshape(shape) - 3
    np.testing.assert_array_equal(parse_idx(idx_bytes(x), 'x'), x)

def test_big_endian_is_decoded():
    # 0x0102 as a big-endian short is 258, not 513
    assert parse_idx(bytes([0, 0, 0x0B, 1]) + struct.pack('>I', 1) + b'\x01\x02', 'x')[0] == 258

GOOD = idx_bytes(np.arange(12, dtype='u1').reshape(3, 4))
BAD = {  # a malformed file, and what the one ValueError must say
    'empty': (b'', 'not an IDX file (its header: none)'),
    'too short': (b'\x00\x00', 'not an IDX file (its header: 00 00)'),
    'first two bytes': (b'\x00\x01' + GOOD[2:], 'not an IDX file (its header: 00 01 08 02'),
    'unknown type': (GOOD[:2] + b'\x0a' + GOOD[3:], 'not an IDX file (its header: 00 00 0a 02'),
    'header cut short': (GOOD[:6], 'not an IDX file (its header: 00 00 08 02 00 00)'),
    'data cut short': (GOOD[:-1], 'declares (3, 4) uint8, 12 bytes of data, but 11 bytes follow'),
    'trailing bytes': (GOOD + b'\0\0', '12 bytes of data, but 14 bytes follow'),
}

@pytest.mark.parametrize('case', BAD)
def test_a_malformed_idx_file_is_one_value_error_naming_it(case):
    raw, message = BAD[case]
    with pytest.raises(ValueError) as e:
        parse_idx(raw, 'data/x-idx1-ubyte')
    assert str(e.value).startswith('data/x-idx1-ubyte: ') and message in str(e.value)

NAME = 'train-images-idx3-ubyte'

def damaged(gz):
    """gz with bytes inside its compressed body inverted: zlib finds it, not gzip."""
    gz = bytearray(gz)
    gz[12:40] = bytes(b ^ 0xFF for b in gz[12:40])
    return bytes(gz)

@pytest.mark.parametrize('raw', [GOOD, gzip.compress(GOOD)[:-9], b'\x1f\x8b' + b'\0' * 30,
                                 damaged(gzip.compress(GOOD * 50))],
                         ids=['not gzip', 'cut short', 'bad header', 'damaged inside'])
def test_a_gz_file_that_is_not_gzip_is_one_value_error_naming_it(tmp_path, monkeypatch, raw):
    monkeypatch.setattr(mnist, 'SHA256', {NAME: hashlib.sha256(GOOD).hexdigest()})
    (tmp_path / f'{NAME}.gz').write_bytes(raw)   # not gzip, cut short, bad header, damaged
    with pytest.raises(ValueError) as e:
        read_or_download(NAME, tmp_path)
    assert str(e.value).startswith(f'{tmp_path / NAME}.gz: not a readable gzip file (')
    assert str(e.value).endswith('); delete or replace it')

@pytest.mark.parametrize('raw', [GOOD[:-1], GOOD[:6], b'\0\1' + GOOD[2:]])
def test_a_malformed_mnist_file_says_to_delete_it(tmp_path, monkeypatch, raw):
    monkeypatch.setattr(mnist, 'SHA256', {NAME: hashlib.sha256(GOOD).hexdigest()})
    for path in (tmp_path / f'{NAME}.gz', tmp_path / NAME):   # gzipped or not
        path.write_bytes(gzip.compress(raw) if path.suffix == '.gz' else raw)
        with pytest.raises(ValueError) as e:
            read_or_download(NAME, tmp_path)
        assert str(e.value) == (f'{path}: damaged or not the MNIST file {NAME} (its SHA-256 '
                                f'differs); delete it, and it is downloaded again')
        path.unlink()

def test_a_huge_declared_shape_allocates_nothing():
    # 28 bytes whose header claims 1000 x 1000 x 1000 bytes (1 GB) of data
    raw = bytes([0, 0, 8, 3]) + struct.pack('>3I', 1000, 1000, 1000) + b'\0' * 12
    tracemalloc.start()
    with pytest.raises(ValueError, match='1,000,000,000 bytes of data, but 12 bytes follow'):
        parse_idx(raw, 'huge')
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000, f'parsing a bad header allocated {peak:,} bytes'

# -----------------------------------------------------------------------------
# load_mnist on small fake files, with their own checksums

def fake_mnist(folder, monkeypatch, n_train=6, n_val=4, gz=True):
    """Four small MNIST-shaped IDX files in folder, made mnist.py's expected content."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              np.arange(n_train, dtype=np.uint8) % 10,
              rng.integers(0, 256, (n_val, 28, 28), dtype=np.uint8),
              np.arange(n_val, dtype=np.uint8)[::-1] % 10]
    sha = {}
    Path(folder).mkdir(parents=True, exist_ok=True)
    for name, x in zip(mnist.SHA256, arrays):
        raw = idx_bytes(x)
        path = Path(folder) / (f'{name}.gz' if gz else name)
        path.write_bytes(gzip.compress(raw) if gz else raw)
        sha[name] = hashlib.sha256(raw).hexdigest()
    monkeypatch.setattr(mnist, 'SHA256', sha)
    return arrays

@pytest.mark.parametrize('gz', [True, False])
def test_load_mnist_scales_and_pads_as_the_blog(tmp_path, monkeypatch, gz):
    raw = fake_mnist(tmp_path, monkeypatch, gz=gz)
    x_train, y_train, x_val, y_val = load_mnist(tmp_path)
    for x, images in ((x_train, raw[0]), (x_val, raw[2])):
        assert x.shape == (len(images), 32, 32) and x.dtype == torch.float32
        expected = torch.nn.functional.pad(torch.from_numpy(images) / 255.0, (2, 2, 2, 2))
        assert torch.equal(x, expected)               # the blog's x / 255.0, padded with zeros
    assert y_train.dtype == torch.int64 and y_train.tolist() == raw[1].tolist()
    assert y_val.tolist() == raw[3].tolist()

def test_a_data_dir_that_is_a_file(tmp_path):
    (tmp_path / 'data').write_bytes(b'')
    with pytest.raises(ValueError, match=f'--data-dir {tmp_path / "data"} is a file, not a folder'):
        load_mnist(tmp_path / 'data')

# -----------------------------------------------------------------------------
# downloads, from a local HTTP server

class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files quietly; under /cut/ it promises 1,000 bytes and sends 2: a dropped download."""
    def log_message(self, *args):
        pass

    def do_GET(self):
        if not self.path.startswith('/cut/'):
            return super().do_GET()
        self.send_response(200)
        self.send_header('Content-Length', '1000')
        self.end_headers()
        self.wfile.write(b'\x1f\x8b')

@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/'served'; yields its base URL."""
    root = tmp_path / 'served'
    root.mkdir()
    handler = functools.partial(Handler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}/', root
    httpd.shutdown()

def test_missing_files_are_downloaded_and_checked(tmp_path, monkeypatch, server):
    url, served = server
    raw = fake_mnist(served / 'good', monkeypatch)
    fake_mnist(served / 'other', monkeypatch, n_train=5)           # the wrong files, first
    fake_mnist(served / 'good', monkeypatch)                       # the right checksums
    (served / 'broken').mkdir()
    (served / 'broken' / 'train-images-idx3-ubyte.gz').write_bytes(b'not gzip')
    (served / 'damaged').mkdir()
    (served / 'damaged' / 'train-images-idx3-ubyte.gz').write_bytes(
        damaged((served / 'good' / 'train-images-idx3-ubyte.gz').read_bytes()))
    # the mirrors in order; only the last serves the right files
    mirrors = [url + m for m in ('missing/', 'cut/', 'broken/', 'damaged/', 'other/', 'good/')]
    monkeypatch.setattr(mnist, 'MIRRORS', mirrors)
    x_train, _, x_val, _ = load_mnist(tmp_path / 'data')
    assert torch.equal(x_train[:, 2:30, 2:30] * 255, torch.from_numpy(raw[0]).float())
    # each file now lies in data/, exactly as the good mirror served it, and nothing else
    names = sorted(f'{n}.gz' for n in mnist.SHA256)
    assert sorted(p.name for p in (tmp_path / 'data').iterdir()) == names
    for name in names:
        assert (tmp_path / 'data' / name).read_bytes() == (served / 'good' / name).read_bytes()

def test_no_files_and_no_mirror_says_where_to_put_them(tmp_path, monkeypatch, server):
    url, served = server
    fake_mnist(served, monkeypatch)
    monkeypatch.setattr(mnist, 'MIRRORS', [url + 'missing/'])
    with pytest.raises(FileNotFoundError) as e:
        load_mnist(tmp_path / 'data')
    assert str(e.value) == (f'train-images-idx3-ubyte.gz is not in {tmp_path / "data"}/ and no '
                            f'mirror served it; without internet, put the four MNIST files there: '
                            f'{", ".join(mnist.SHA256)} (gzipped as .gz or not)')
    assert not (tmp_path / 'data').exists()           # nothing partial left behind

# -----------------------------------------------------------------------------
# the real files

def test_real_mnist_as_the_blog_uses_it(mnist_data):
    x_train, y_train, x_val, y_val = mnist_data
    assert x_train.shape == (60000, 32, 32) and x_val.shape == (10000, 32, 32)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert x_train.min() == 0 and x_train.max() == 1
    for x in (x_train, x_val):
        border = torch.ones(32, 32, dtype=torch.bool)
        border[2:30, 2:30] = False
        assert (x[:, border] == 0).all()              # the 2-pixel padding
    assert torch.bincount(y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265,
                                                5851, 5949]
    assert torch.bincount(y_val).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

def test_real_pixels_are_the_files_bytes(mnist_data):
    root = Path(__file__).resolve().parent.parent / 'data'
    raw = gzip.decompress((root / 't10k-images-idx3-ubyte.gz').read_bytes())
    pixels = np.frombuffer(raw, np.uint8, offset=16).reshape(10000, 28, 28)   # after 16 bytes
    assert torch.equal(mnist_data[2][:, 2:30, 2:30] * 255, torch.from_numpy(pixels.copy()).float())
    raw = gzip.decompress((root / 't10k-labels-idx1-ubyte.gz').read_bytes())
    labels = np.frombuffer(raw, np.uint8, offset=8)
    assert mnist_data[3].tolist() == labels.tolist()

# -----------------------------------------------------------------------------
# the figure, the command, and the shared helpers

def test_plot_samples_draws_random_digits_of_each_row(tmp_path, monkeypatch):
    y = torch.arange(300) % 10
    x = (torch.arange(300).float() / 300)[:, None, None].expand(300, 32, 32)   # image i: i / 300
    figures = []
    monkeypatch.setattr(mnist, 'save_figure', lambda fig, path: figures.append(fig))
    for seed in (0, 0, 1):
        mnist.plot_samples(x, y, tmp_path / 'x.png', per_digit=3, seed=seed)
    shown = [[round(float(ax.images[0].get_array()[0, 0]) * 300) for ax in fig.axes]
             for fig in figures]
    for row in range(10):
        picks = shown[0][row * 3:(row + 1) * 3]
        assert [i % 10 for i in picks] == [row] * 3 and len(set(picks)) == 3   # three of that digit
    assert shown[0] == shown[1] and shown[0] != shown[2]    # the seed says which

def test_main_prints_the_splits_and_writes_the_figure(tmp_path, monkeypatch, capsys):
    fake_mnist(tmp_path / 'd', monkeypatch, n_train=30, n_val=20)
    mnist.main(['--data-dir', str(tmp_path / 'd'), '--out-dir', str(tmp_path / 'o'), '--seed', '3'])
    out = capsys.readouterr().out
    assert 'train: x (30, 32, 32) torch.float32, y (30,) torch.int64 | images per digit [3' in out
    assert (tmp_path / 'o' / 'mnist_samples.png').read_bytes()[:4] == b'\x89PNG'

def test_write_atomic_keeps_the_old_file_on_any_failure(tmp_path):
    path = tmp_path / 'f.txt'
    path.write_text('old')
    def half_then(error):
        def write(tmp):
            tmp.write_text('half')
            raise error
        return write
    for error in (OSError(28, 'No space left on device'), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            write_atomic(path, half_then(error))
        assert path.read_text() == 'old' and [p.name for p in tmp_path.iterdir()] == ['f.txt']
    write_atomic(path, lambda tmp: tmp.write_text('new'))
    assert path.read_text() == 'new' and [p.name for p in tmp_path.iterdir()] == ['f.txt']

def test_check_writable(tmp_path):
    check_writable(tmp_path / 'a' / 'b')              # made, with its parents
    assert (tmp_path / 'a' / 'b').is_dir() and not any((tmp_path / 'a' / 'b').iterdir())
    (tmp_path / 'file').write_text('')
    for folder in (tmp_path / 'file', tmp_path / 'file' / 'sub'):
        with pytest.raises(ValueError, match=f'cannot write into the folder {folder}: '):
            check_writable(folder)

def test_run_script_turns_errors_into_one_line_and_an_exit_code(capsys):
    def fails(error):
        def main():
            raise error
        return main
    for error, code in ((ValueError('bad.npy: no'), 'error: bad.npy: no'),
                        (FileNotFoundError('x.pt: none'), 'error: x.pt: none'),
                        (FloatingPointError('nan'), 'error: nan'), (KeyboardInterrupt(), 130)):
        with pytest.raises(SystemExit) as e:
            run_script(fails(error))
        assert e.value.code == code                   # a string: printed, exit status 1
    assert 'interrupted' in capsys.readouterr().err
    with pytest.raises(RuntimeError):                 # a bug is not an input: its traceback stays
        run_script(fails(RuntimeError('shapes')))

def test_the_sample_figure_shows_test_digits_chosen_by_the_seed(tmp_path, monkeypatch):
    raw = fake_mnist(tmp_path / 'd', monkeypatch, n_train=100, n_val=200)
    x_val = torch.nn.functional.pad(torch.from_numpy(raw[2]) / 255.0, (2, 2, 2, 2))  # (200, 32, 32)
    y_val = torch.from_numpy(raw[3]).long()
    figures, plot_samples = [], mnist.plot_samples
    monkeypatch.setattr(mnist, 'save_figure', lambda fig, path: figures.append(fig))
    monkeypatch.setattr(mnist, 'plot_samples',                      # 3 a row, not 10: faster
                        lambda *args, **kwargs: plot_samples(*args, **kwargs, per_digit=3))
    for seed in (3, 3, 4):
        mnist.main(['--data-dir', str(tmp_path / 'd'), '--out-dir', str(tmp_path / 'o'),
                    '--seed', str(seed)])
    shown = []
    for fig in figures:
        images = torch.stack([torch.as_tensor(np.asarray(ax.images[0].get_array()),
                                              dtype=torch.float32)
                              for ax in fig.axes])                  # (30, 32, 32), row by row
        match = torch.cdist(images.flatten(1), x_val.flatten(1)).argmin(1)
        assert torch.equal(images, x_val[match])                    # every one a test digit
        assert torch.equal(y_val[match], torch.arange(30) // 3)     # of its row's digit
        shown.append(match.tolist())
    assert shown[0] == shown[1] and shown[0] != shown[2]            # the seed says which
