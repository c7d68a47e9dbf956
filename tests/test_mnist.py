"""
Tests for mnist.py: the IDX parser on files the tests write, every kind of bad file, the
verified download against a local HTTP server, the real MNIST files in data/, the file
helpers, and the reader of generated digits (every shape, PNG folders, bad files).
"""

import functools
import gzip
import hashlib
import http.server
import os
import socket
import struct
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import mnist

# -----------------------------------------------------------------------------
# writing IDX files, independently of mnist.py

TYPE_CODES = {'u1': 0x08, 'i1': 0x09, 'i2': 0x0B, 'i4': 0x0C, 'f4': 0x0D, 'f8': 0x0E}

def idx_bytes(x):
    """The IDX encoding of array x: zero, zero, type code, ndim, big-endian sizes, data."""
    code = TYPE_CODES[x.dtype.str[1:]]
    header = bytes([0, 0, code, x.ndim]) + struct.pack(f'>{x.ndim}I', *x.shape)
    return header + x.astype(x.dtype.newbyteorder('>')).tobytes()

def write(path, raw, gz=None):
    path = Path(path)
    gz = path.suffix == '.gz' if gz is None else gz
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path

# -----------------------------------------------------------------------------
# round trips

@pytest.mark.parametrize('dtype', ['u1', 'i1', '<i2', '<i4', '<f4', '<f8'])
@pytest.mark.parametrize('suffix', ['', '.gz'])
def test_round_trip_every_type(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    path = write(tmp_path / f'x-idx3{suffix}', idx_bytes(x))
    y = mnist.read_idx(path)
    assert y.shape == x.shape and y.dtype == np.dtype(dtype).newbyteorder('=')
    np.testing.assert_array_equal(y, x)
    y[0, 0, 0] = 1  # a writable array, not a view of the file's bytes

@pytest.mark.parametrize('shape', [(7,), (2, 3), (2, 1, 3, 2), (1, 1, 1, 1, 2)])
def test_round_trip_any_number_of_dimensions(tmp_path, shape):
    x = np.arange(np.prod(shape), dtype='>i4').reshape(shape) - 3
    y = mnist.read_idx(write(tmp_path / 'x.gz', idx_bytes(x)))
    assert y.shape == shape
    np.testing.assert_array_equal(y, x)

def test_big_endian_is_decoded(tmp_path):
    # 0x0102 as a big-endian short is 258, not 513
    raw = bytes([0, 0, 0x0B, 1]) + struct.pack('>I', 1) + b'\x01\x02'
    assert mnist.read_idx(write(tmp_path / 'x', raw))[0] == 258

# -----------------------------------------------------------------------------
# bad files: one ValueError that names the file

GOOD = idx_bytes(np.arange(12, dtype='u1').reshape(3, 4))

BAD = {
    'first two bytes': (b'\x00\x01' + GOOD[2:], 'first two bytes'),
    'unknown type': (GOOD[:2] + b'\x0a' + GOOD[3:], 'unknown IDX element type 0x0a'),
    'zero dimensions': (bytes([0, 0, 8, 0]), 'zero dimensions'),
    'header cut short': (GOOD[:6], 'inside the header'),
    'truncated payload': (GOOD[:-1], r'truncated: shape \(3, 4\) uint8 needs 12 bytes, 11 follow'),
    'trailing bytes': (GOOD + b'\x00\x00', '2 unexpected bytes'),
    'empty': (b'', 'only 0 bytes: empty or too short for the 4-byte IDX header'),
    'too short': (b'\x00\x00', 'only 2 bytes: empty or too short'),
}

@pytest.mark.parametrize('case', BAD)
@pytest.mark.parametrize('suffix', ['', '.gz'])
def test_bad_idx_file(tmp_path, case, suffix):
    raw, message = BAD[case]
    path = write(tmp_path / f'bad{suffix}', raw)
    with pytest.raises(ValueError, match=message) as e:
        mnist.read_idx(path)
    assert str(path) in str(e.value)

def test_gz_that_is_not_gzip(tmp_path):
    path = write(tmp_path / 'x.gz', GOOD, gz=False)
    with pytest.raises(ValueError, match='not a gzip file') as e:
        mnist.read_idx(path)
    assert str(path) in str(e.value)

def test_empty_gz(tmp_path):
    path = write(tmp_path / 'x.gz', b'', gz=False)
    with pytest.raises(ValueError, match=r'not a gzip file \(the file is empty\)') as e:
        mnist.read_idx(path)
    assert str(path) in str(e.value)

@pytest.mark.parametrize('corrupt', ['cut short', 'flipped byte'])
def test_corrupt_gzip(tmp_path, corrupt):
    data = bytearray(gzip.compress(idx_bytes(np.arange(1000, dtype='u1'))))
    if corrupt == 'cut short':
        data = data[:len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF  # breaks the deflate stream or the CRC
    path = write(tmp_path / 'x.gz', bytes(data), gz=False)
    with pytest.raises(ValueError, match='corrupt gzip') as e:
        mnist.read_idx(path)
    assert str(path) in str(e.value)

def test_huge_declared_shape_allocates_nothing(tmp_path):
    # a 28-byte file whose header claims 1000 x 1000 x 1000 bytes (1 GB) of data
    raw = bytes([0, 0, 8, 3]) + struct.pack('>3I', 1000, 1000, 1000) + b'\x00' * 12
    path = write(tmp_path / 'huge.gz', raw)
    tracemalloc.start()
    with pytest.raises(ValueError, match='truncated') as e:
        mnist.read_idx(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert str(path) in str(e.value)
    assert peak < 10_000_000, f'parsing a bad header allocated {peak:,} bytes'

# -----------------------------------------------------------------------------
# load_mnist on small files the test writes (with their own checksums)

NAMES = list(mnist.SHA256)

def write_fake_mnist(folder, n_train=6, n_val=4, labels=None):
    """Four small MNIST-shaped IDX files; returns their SHA-256 dict."""
    rng = np.random.default_rng(0)
    arrays = {
        NAMES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        NAMES[1]: np.arange(n_train, dtype=np.uint8) % 10 if labels is None else labels,
        NAMES[2]: rng.integers(0, 256, (n_val, 28, 28), dtype=np.uint8),
        NAMES[3]: np.arange(n_val, dtype=np.uint8) % 10,
    }
    sha = {}
    for name, x in arrays.items():
        raw = idx_bytes(x)
        write(Path(folder) / f'{name}.gz', raw)
        sha[name] = hashlib.sha256(raw).hexdigest()
    return sha, arrays

def test_load_mnist_scales_and_pads(tmp_path):
    sha, arrays = write_fake_mnist(tmp_path)
    x_train, y_train, x_val, y_val = mnist.load_mnist(tmp_path, mirrors=[], sha256=sha)
    assert x_train.shape == (6, 32, 32) and x_val.shape == (4, 32, 32)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    expected = np.zeros((6, 32, 32), np.float32)
    expected[:, 2:30, 2:30] = arrays[NAMES[0]] / np.float32(255)
    np.testing.assert_array_equal(x_train.numpy(), expected)
    np.testing.assert_array_equal(y_val.numpy(), arrays[NAMES[3]])

def test_load_mnist_accepts_decompressed_files(tmp_path):
    sha, arrays = write_fake_mnist(tmp_path)
    for name in NAMES:  # replace every .gz by its decompressed content
        gz = tmp_path / f'{name}.gz'
        (tmp_path / name).write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    x_train, *_ = mnist.load_mnist(tmp_path, mirrors=[], sha256=sha)
    assert x_train.shape == (6, 32, 32)

def test_load_mnist_wrong_content_says_delete(tmp_path):
    sha, _ = write_fake_mnist(tmp_path)
    sha[NAMES[2]] = '0' * 64
    with pytest.raises(ValueError, match='wrong content.*Delete it') as e:
        mnist.load_mnist(tmp_path, mirrors=[], sha256=sha)
    assert NAMES[2] in str(e.value)

def test_load_mnist_corrupt_gzip_says_delete(tmp_path):
    sha, _ = write_fake_mnist(tmp_path)
    path = tmp_path / f'{NAMES[1]}.gz'
    path.write_bytes(path.read_bytes()[:-9])  # cut short, as an interrupted copy would be
    with pytest.raises(ValueError, match='corrupt gzip.*Delete it') as e:
        mnist.load_mnist(tmp_path, mirrors=[], sha256=sha)
    assert str(path) in str(e.value)

# -----------------------------------------------------------------------------
# downloading, against a local http.server the test starts

class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/'served' on 127.0.0.1; yields (folder, base url)."""
    folder = tmp_path / 'served'
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f'http://127.0.0.1:{httpd.server_address[1]}/'
    httpd.shutdown()
    httpd.server_close()

def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    return f'http://127.0.0.1:{port}/'

TINY = idx_bytes(np.arange(10, dtype='u1'))
TINY_SHA = hashlib.sha256(TINY).hexdigest()

def test_download_good_file_is_verified_and_kept(server, tmp_path):
    served, url = server
    write(served / 'tiny-idx1-ubyte.gz', TINY)
    data_dir = tmp_path / 'data'
    path = mnist.download('tiny-idx1-ubyte', data_dir, mirrors=[url], sha256=TINY_SHA)
    assert path == data_dir / 'tiny-idx1-ubyte.gz'
    assert sorted(p.name for p in data_dir.iterdir()) == ['tiny-idx1-ubyte.gz']  # no temp files
    np.testing.assert_array_equal(mnist.read_idx(path), np.arange(10))

def test_download_corrupt_file_leaves_nothing(server, tmp_path):
    served, url = server
    write(served / 'tiny-idx1-ubyte.gz', TINY[:-1] + b'\x63')  # one byte differs
    data_dir = tmp_path / 'data'
    with pytest.raises(FileNotFoundError, match='wrong content'):
        mnist.download('tiny-idx1-ubyte', data_dir, mirrors=[url], sha256=TINY_SHA)
    assert list(data_dir.iterdir()) == []

def test_download_not_gzip_leaves_nothing(server, tmp_path):
    served, url = server
    write(served / 'tiny-idx1-ubyte.gz', b'<html>not found</html>', gz=False)
    data_dir = tmp_path / 'data'
    with pytest.raises(FileNotFoundError, match='not a gzip file'):
        mnist.download('tiny-idx1-ubyte', data_dir, mirrors=[url], sha256=TINY_SHA)
    assert list(data_dir.iterdir()) == []

def test_download_that_cannot_be_written_is_one_error_and_leaves_nothing(server, tmp_path):
    served, url = server
    write(served / 'tiny-idx1-ubyte.gz', TINY)
    (tmp_path / 'data' / 'tiny-idx1-ubyte.gz').mkdir(parents=True)          # a folder where the file goes
    with pytest.raises(ValueError, match=f"cannot write {tmp_path / 'data' / 'tiny-idx1-ubyte.gz'}: a folder is in the way"):
        mnist.download('tiny-idx1-ubyte', tmp_path / 'data', mirrors=[url], sha256=TINY_SHA)
    assert [p.name for p in (tmp_path / 'data').iterdir()] == ['tiny-idx1-ubyte.gz']   # no temporary file

def test_download_falls_through_to_next_mirror(server, tmp_path):
    served, url = server
    write(served / 'tiny-idx1-ubyte.gz', TINY)
    empty = tmp_path / 'served' / 'empty'  # a mirror that answers 404
    empty.mkdir()
    mirrors = [closed_port_url(), url + 'empty/', url]
    path = mnist.download('tiny-idx1-ubyte', tmp_path / 'data', mirrors=mirrors, sha256=TINY_SHA)
    np.testing.assert_array_equal(mnist.read_idx(path), np.arange(10))

def test_no_network_error_tells_what_to_do(tmp_path):
    mirrors = [closed_port_url(), closed_port_url()]
    with pytest.raises(FileNotFoundError) as e:
        mnist.load_mnist(tmp_path / 'data', mirrors=mirrors)
    message = str(e.value)
    for name in NAMES:
        assert f'{name}.gz' in message
    for m in mirrors:
        assert m in message
    assert str((tmp_path / 'data').resolve()) in message
    assert list((tmp_path / 'data').iterdir()) == []

def test_load_mnist_downloads_missing_files(server, tmp_path):
    served, url = server
    sha, arrays = write_fake_mnist(served)
    x_train, y_train, x_val, y_val = mnist.load_mnist(tmp_path / 'data', mirrors=[url], sha256=sha)
    assert x_train.shape == (6, 32, 32) and len(y_val) == 4
    assert sorted(p.name for p in (tmp_path / 'data').iterdir()) == sorted(f'{n}.gz' for n in NAMES)

# -----------------------------------------------------------------------------
# the real MNIST files (CI copies them into data/; a user's first run downloads them)

DATA_DIR = Path(__file__).resolve().parent.parent / 'data'

@pytest.fixture(scope='module')
def real():
    try:
        return mnist.load_mnist(DATA_DIR)
    except FileNotFoundError as e:
        pytest.fail(f'these tests need the four real MNIST files in {DATA_DIR} '
                    f'(put the four .gz files there, or let mnist.py download them):\n{e}')

def test_real_shapes_and_dtypes(real):
    x_train, y_train, x_val, y_val = real
    assert x_train.shape == (60000, 32, 32) and y_train.shape == (60000,)
    assert x_val.shape == (10000, 32, 32) and y_val.shape == (10000,)
    assert x_train.dtype == x_val.dtype == torch.float32
    assert y_train.dtype == y_val.dtype == torch.int64

def test_real_value_range_and_zero_border(real):
    for x in real[0], real[2]:
        assert x.min() == 0 and x.max() == 1
        assert (x[:, :2] == 0).all() and (x[:, -2:] == 0).all()
        assert (x[:, :, :2] == 0).all() and (x[:, :, -2:] == 0).all()

def test_real_images_per_class(real):
    # the well-known class counts of MNIST
    assert torch.bincount(real[1]).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(real[3]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

def test_real_pixels_match_the_raw_bytes(real):
    # an independent decode of the first and last test image: skip the 16-byte header
    path = next(p for p in (DATA_DIR / 't10k-images-idx3-ubyte.gz', DATA_DIR / 't10k-images-idx3-ubyte')
                if p.exists())
    raw = path.read_bytes()
    raw = gzip.decompress(raw) if path.suffix == '.gz' else raw
    pixels = np.frombuffer(raw, np.uint8, offset=16).reshape(10000, 28, 28)
    for i in (0, 9999):
        np.testing.assert_array_equal((real[2][i, 2:30, 2:30] * 255).round().numpy(), pixels[i])

# -----------------------------------------------------------------------------
# the figure and the command line

def test_plot_samples_picks_random_digits_of_each_row(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(mnist, 'plot_tiles', lambda tiles, path, **kw: drawn.append(tiles))
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 10
    x = torch.arange(200).float().view(200, 1, 1).expand(200, 32, 32).contiguous()   # image i is all i
    for seed in (0, 0, 1):
        mnist.plot_samples(x, y, tmp_path / 's.png', per_digit=4, seed=seed)
    ids = [t[:, :, 0, 0].long() for t in drawn]                       # (10, 4) image indices
    for d in range(10):
        assert (y[ids[0][d]] == d).all() and len(set(ids[0][d].tolist())) == 4   # 4 different images of d
    assert torch.equal(ids[0], ids[1]) and not torch.equal(ids[0], ids[2])       # the seed decides

def test_plot_tiles_writes_one_png(tmp_path):
    tiles = np.random.default_rng(0).uniform(size=(3, 4, 5, 5))
    tiles[1, 2] = np.nan                                              # a missing tile
    mnist.plot_tiles(tiles, tmp_path / 't.png', 'title', row_labels=['a', 'b', 'c'],
                     tile_labels=[['x'] * 4] * 3)
    assert (tmp_path / 't.png').read_bytes()[:4] == b'\x89PNG'
    assert [p.name for p in tmp_path.iterdir()] == ['t.png']

def test_cli_flags(tmp_path, monkeypatch, capsys):
    asked, plotted = [], []
    y = torch.arange(100) % 10
    def fake_load(data_dir):
        asked.append(data_dir)
        return torch.zeros(100, 32, 32), y, torch.zeros(100, 32, 32), y
    monkeypatch.setattr(mnist, 'load_mnist', fake_load)
    monkeypatch.setattr(mnist, 'plot_samples', lambda x, y, path, seed: plotted.append((path, seed)))
    mnist.main(['--data-dir', 'somewhere', '--out-dir', str(tmp_path / 'o'), '--seed', '5'])
    assert asked == ['somewhere'] and plotted == [(tmp_path / 'o' / 'mnist_samples.png', 5)]
    assert 'val images per digit:   [10, 10, 10, 10, 10, 10, 10, 10, 10, 10]' in capsys.readouterr().out

def test_cli_bad_data_is_one_error_line(tmp_path, capsys):
    (tmp_path / 'train-images-idx3-ubyte.gz').write_bytes(b'not gzip')   # found, so nothing is downloaded
    with pytest.raises(SystemExit) as e:
        mnist.main(['--data-dir', str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.startswith('error: ') and 'not a gzip file' in err and 'Delete it' in err

def test_tile_mosaic_places_each_tile():
    tiles = np.arange(2 * 3 * 4 * 5, dtype=float).reshape(2, 3, 4, 5)  # (R, C, H, W), not square
    m = mnist.tile_mosaic(tiles)
    assert m.shape == (2 * 5 - 1, 3 * 6 - 1)
    for r in range(2):
        for c in range(3):
            np.testing.assert_array_equal(m[r * 5:r * 5 + 4, c * 6:c * 6 + 5], tiles[r, c])
    assert np.isnan(m[4]).all() and np.isnan(m[:, 5]).all()         # the gaps

# -----------------------------------------------------------------------------
# writing and reading files: complete or not at all, and one line when it fails

def test_write_atomic_keeps_the_old_file_when_the_disk_is_full(tmp_path):
    import errno
    path = tmp_path / 'classifier.pt'
    path.write_bytes(b'the finished checkpoint')
    def full_disk(tmp):
        Path(tmp).write_bytes(b'half a chec')                          # a partial write, then ENOSPC
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(ValueError, match=f'cannot write {path}: No space left on device'):
        mnist.write_atomic(path, full_disk)
    assert path.read_bytes() == b'the finished checkpoint'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['classifier.pt']   # no .tmp left

def test_write_atomic_on_ctrl_c_and_in_the_way(tmp_path):
    path = tmp_path / 'x.npz'
    def interrupted(tmp):
        Path(tmp).write_bytes(b'part')
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        mnist.write_atomic(path, interrupted)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / 'folder.png').mkdir()
    with pytest.raises(ValueError, match='folder.png: a folder is in the way'):
        mnist.write_atomic(tmp_path / 'folder.png', lambda tmp: Path(tmp).write_bytes(b'x'))
    (tmp_path / 'file').write_bytes(b'')
    with pytest.raises(ValueError, match='cannot write .*file/out.png'):
        mnist.write_atomic(tmp_path / 'file' / 'out.png', lambda tmp: Path(tmp).write_bytes(b'x'))
    mnist.write_atomic(path, lambda tmp: Path(tmp).write_bytes(b'new'))
    assert path.read_bytes() == b'new' and sorted(p.name for p in tmp_path.iterdir()) == ['file', 'folder.png', 'x.npz']

def test_check_writable(tmp_path):
    mnist.check_writable(tmp_path / 'a' / 'b')                        # made, and left empty
    assert list((tmp_path / 'a' / 'b').iterdir()) == []
    (tmp_path / 'f').write_bytes(b'')
    with pytest.raises(ValueError, match=f'cannot write into {tmp_path / "f"}/'):
        mnist.check_writable(tmp_path / 'f')

def test_npz_round_trip_and_damage(tmp_path):
    mnist.save_npz(tmp_path / 's.npz', a=np.arange(3), n=7)
    z = mnist.load_npz(tmp_path / 's.npz')
    assert z['a'].tolist() == [0, 1, 2] and z['n'].item() == 7
    whole = (tmp_path / 's.npz').read_bytes()
    np.save(tmp_path / 'one.npy', np.arange(3))
    (tmp_path / 'cut.npz').write_bytes(whole[:len(whole) // 2])
    at = whole.find(np.arange(3).tobytes()) + 1                      # inside the data of a
    (tmp_path / 'flipped.npz').write_bytes(whole[:at] + bytes([whole[at] ^ 0xFF]) + whole[at + 1:])
    (tmp_path / 'one.npy').rename(tmp_path / 'renamed.npz')
    for name in ('cut.npz', 'flipped.npz', 'renamed.npz'):
        with pytest.raises(ValueError, match=f'{name}: not a readable .npz file') as e:
            mnist.load_npz(tmp_path / name)
        assert '\n' not in str(e.value), name
    with pytest.raises(FileNotFoundError, match='missing.npz: no such file'):
        mnist.load_npz(tmp_path / 'missing.npz')

def test_main_out_dir_a_file_and_ctrl_c(tmp_path, monkeypatch, capsys):
    (tmp_path / 'file').write_bytes(b'')
    with pytest.raises(SystemExit) as e:
        mnist.main(['--out-dir', str(tmp_path / 'file'), '--data-dir', str(tmp_path / 'none')])
    err = capsys.readouterr().err
    assert e.value.code == 1 and f'cannot write into {tmp_path / "file"}/' in err and 'Traceback' not in err
    def interrupted(data_dir):
        raise KeyboardInterrupt
    monkeypatch.setattr(mnist, 'load_mnist', interrupted)
    with pytest.raises(SystemExit) as e:
        mnist.main(['--out-dir', str(tmp_path / 'out')])
    assert e.value.code == 130 and 'interrupted' in capsys.readouterr().err

def test_a_read_only_folder_is_one_line(tmp_path, monkeypatch):
    # the tests run as root, which may write anywhere: the refusal is injected, as the
    # operating system raises it for a folder without write permission
    import errno
    def refuse(*a, **kw):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    monkeypatch.setattr(mnist.tempfile, 'mkstemp', refuse)
    with pytest.raises(ValueError, match=f'cannot write into {tmp_path}/: Permission denied'):
        mnist.check_writable(tmp_path)
    with pytest.raises(ValueError, match='cannot write .*x.png: Permission denied'):
        mnist.write_atomic(tmp_path / 'x.png', refuse)
    assert list(tmp_path.iterdir()) == []

@pytest.mark.parametrize('text, message', [('-1', '-1 is not in [0, 2**64)'), (str(2 ** 64), 'is not in [0, 2**64)'),
                                           ('1.5', "'1.5' is not a whole number")])
def test_seed_flag_range(text, message, capsys):
    with pytest.raises(SystemExit) as e:
        mnist.main(['--seed', text])
    assert e.value.code == 2 and f'argument --seed: ' in (err := capsys.readouterr().err) and message in err
    assert mnist.seed_arg(str(2 ** 64 - 1)) == 2 ** 64 - 1

def test_a_file_where_a_folder_should_be_is_named(tmp_path):
    (tmp_path / 'afile').write_bytes(b'mine')
    with pytest.raises(ValueError, match=f'cannot write into {tmp_path / "afile" / "sub"}/: {tmp_path / "afile"} is a file, not a folder'):
        mnist.check_writable(tmp_path / 'afile' / 'sub')
    with pytest.raises(ValueError, match=f'{tmp_path / "afile"} is a file, not a folder'):
        mnist.write_atomic(tmp_path / 'afile' / 'x.png', lambda tmp: Path(tmp).write_bytes(b'x'))
    assert (tmp_path / 'afile').read_bytes() == b'mine'

def test_reason_keeps_the_cause_of_pytorchs_weights_only_paragraph(tmp_path):
    (tmp_path / 'x.pt').write_bytes(b'not a checkpoint at all')
    try:
        torch.load(tmp_path / 'x.pt', weights_only=True)
    except Exception as e:
        text = mnist.reason(e)
    assert '\n' not in text and 'weights_only' not in text and len(text) < 100

def test_data_dir_that_is_a_file_is_one_line(tmp_path):
    import subprocess
    import sys
    (tmp_path / 'file').write_bytes(b'')
    with pytest.raises(ValueError, match=f'{tmp_path / "file"} is a file, not a folder for the MNIST files'):
        mnist.load_mnist(tmp_path / 'file')
    r = subprocess.run([sys.executable, 'train.py', '--data-dir', str(tmp_path / 'file'), '--out-dir', str(tmp_path / 'o'),
                        '--epochs', '1', '--device', 'cpu'], cwd=Path(__file__).resolve().parent.parent,
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr == f'error: {tmp_path / "file"} is a file, not a folder for the MNIST files\n'
