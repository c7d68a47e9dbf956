"""
Tests for fid.py: the Fréchet distance against closed forms and an independent
computation, feature_statistics against numpy, input checks, and the command line.
"""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fid
from fid import feature_statistics, frechet_distance, load_stats, save_stats, to_model_input
from mnist import pad
from model import Classifier
from train import save_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def random_spd(d, rng, rank=None):
    """A random symmetric positive semi-definite d x d matrix of the given rank."""
    A = rng.standard_normal((d, rank or d))
    return A @ A.T / d

# -----------------------------------------------------------------------------
# the maths

def test_identical_statistics_give_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(128), random_spd(128, rng)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0, abs=1e-8)

def test_one_dimension_closed_form():
    m1, s1, m2, s2 = 0.3, 2.0, -1.2, 0.5
    expected = (m1 - m2) ** 2 + s1 + s2 - 2 * np.sqrt(s1 * s2)
    assert frechet_distance([m1], [[s1]], [m2], [[s2]]) == pytest.approx(expected, rel=1e-12)

def test_diagonal_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(20), rng.standard_normal(20)
    a, b = rng.uniform(0.1, 3, 20), rng.uniform(0.1, 3, 20)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)

def test_independent_computation_via_eigenvalues_of_the_product():
    # tr(sqrt(S1 S2)) = sum of the square roots of the eigenvalues of S1 S2, which are real
    # and >= 0; numpy's general (non-symmetric) eigenvalue solver computes them another way
    rng = np.random.default_rng(2)
    for d in (2, 10, 128):
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        s1, s2 = random_spd(d, rng), random_spd(d, rng)
        ev = np.linalg.eigvals(s1 @ s2)
        expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(ev.real.clip(0)).sum()
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)

def test_symmetry_and_rotation_invariance():
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    s1, s2 = random_spd(16, rng), random_spd(16, rng)
    d = frechet_distance(mu1, s1, mu2, s2)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(d, rel=1e-10)
    Q, _ = np.linalg.qr(rng.standard_normal((16, 16)))  # a random rotation
    assert frechet_distance(Q @ mu1, Q @ s1 @ Q.T, Q @ mu2, Q @ s2 @ Q.T) == pytest.approx(d, rel=1e-10)

def test_singular_covariances_stay_finite():
    rng = np.random.default_rng(4)
    # fewer samples than features, as with 10 generated images
    f1, f2 = rng.standard_normal((10, 128)), rng.standard_normal((10, 128)) + 0.1
    mu1, s1, mu2, s2 = f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False)
    d = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(d) and d >= 0
    ev = np.linalg.eigvals(s1 @ s2)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(ev.real.clip(0)).sum()
    assert d == pytest.approx(expected, rel=1e-6)
    # rank-deficient against itself, and all-zero covariances
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-8)
    z = np.zeros((128, 128))
    assert frechet_distance(mu1, z, mu2, z) == pytest.approx(((mu1 - mu2) ** 2).sum())
    s_low = random_spd(128, rng, rank=3)
    assert 0 <= frechet_distance(mu1, s_low, mu2, s2) < np.inf

def test_samples_from_two_known_gaussians():
    # the Fréchet distance of the sample statistics converges to the closed form
    rng = np.random.default_rng(5)
    mu1, mu2 = np.array([0.0, 1.0, -1.0]), np.array([0.5, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    x1 = mu1 + np.sqrt(a) * rng.standard_normal((400_000, 3))
    x2 = mu2 + np.sqrt(b) * rng.standard_normal((400_000, 3))
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()  # 1.25 + 1.17...
    got = frechet_distance(x1.mean(0), np.cov(x1, rowvar=False), x2.mean(0), np.cov(x2, rowvar=False))
    assert got == pytest.approx(expected, abs=0.02)

def test_bad_statistics_raise():
    mu, s = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match='mu2 has shape'):
        frechet_distance(mu, s, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match='sigma1 has shape'):
        frechet_distance(mu, np.eye(2), mu, s)
    with pytest.raises(ValueError, match='not symmetric'):
        frechet_distance(mu, np.triu(np.ones((3, 3))), mu, s)
    with pytest.raises(ValueError, match='NaN'):
        frechet_distance(mu, s, np.array([0, np.nan, 0]), s)

# -----------------------------------------------------------------------------
# statistics of images

def test_feature_statistics_equal_numpy():
    torch.manual_seed(0)
    model = Classifier().train()
    x = torch.rand(53, 1, 32, 32)
    for after_relu in (False, True):
        mu, sigma = feature_statistics(model, x, batch_size=8, after_relu=after_relu)
        model.eval()
        f = model.features(x, after_relu=after_relu).detach().double().numpy()
        model.train()
        np.testing.assert_allclose(mu, f.mean(0), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(sigma, np.cov(f, rowvar=False), rtol=1e-6, atol=1e-9)
        assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (128, 128)
    assert model.training  # the mode is restored

def test_feature_statistics_large_mean_keeps_precision():
    # features with a mean 1e4 times their spread: the shifted sums keep the covariance right
    class Offset(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))
        def features(self, x, after_relu=False):
            return x.flatten(1)[:, :3].double() * 1e-3 + 10.0
    x = torch.rand(1000, 1, 32, 32, dtype=torch.float64)
    mu, sigma = feature_statistics(Offset(), x, batch_size=100)
    f = x.flatten(1)[:, :3].numpy() * 1e-3 + 10.0
    np.testing.assert_allclose(sigma, np.cov(f, rowvar=False), rtol=1e-8)

@pytest.mark.parametrize('shape', [(5, 28, 28), (5, 1, 28, 28), (5, 32, 32), (5, 1, 32, 32)])
def test_accepted_shapes(shape):
    x = torch.rand(shape)
    y = to_model_input(x, 'x')
    assert y.shape == (5, 1, 32, 32) and y.dtype == torch.float32
    if shape[-1] == 28:  # padded exactly the way mnist.py pads MNIST
        torch.testing.assert_close(y[:, 0], pad(x.reshape(5, 28, 28)))

def test_uint8_is_scaled():
    x = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28) % 256
    y = to_model_input(x.astype(np.uint8), 'x')
    torch.testing.assert_close(y[:, 0, 2:30, 2:30], torch.from_numpy(x).float() / 255)

@pytest.mark.parametrize('x, message', [
    (np.zeros((5, 28, 27), np.float32), 'expected images of shape'),
    (np.zeros((5, 3, 32, 32), np.float32), 'expected images of shape'),
    (np.zeros((28, 28), np.float32), 'expected images of shape'),
    (np.full((5, 28, 28), np.nan, np.float32), 'NaN or infinite'),
    (np.full((5, 28, 28), np.inf), 'NaN or infinite'),
    (np.full((5, 28, 28), 255.0, np.float32), r'must lie in \[0, 1\]'),
    (np.full((5, 28, 28), -0.1), r'must lie in \[0, 1\]'),
    (np.zeros((5, 28, 28), np.int64), 'got torch.int64'),
    (np.zeros((1, 28, 28), np.float32), 'at least 2 images'),
])
def test_bad_images_raise(x, message):
    with pytest.raises(ValueError, match=message) as e:
        to_model_input(x, 'samples.npy')
    assert 'samples.npy' in str(e.value)

def test_stats_file_round_trip(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3)
    save_stats(tmp_path / 's.npz', mu, sigma, features='pre')
    mu2, sigma2, meta = load_stats(tmp_path / 's.npz')
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(sigma2, sigma)
    assert meta == {'features': 'pre'}
    np.savez(tmp_path / 'bad.npz', m=mu)
    with pytest.raises(ValueError, match='needs arrays "mu" and "sigma"'):
        load_stats(tmp_path / 'bad.npz')

# -----------------------------------------------------------------------------
# the command line

@pytest.fixture
def setup(tmp_path):
    """A checkpoint of a random model, two small image files, and their FID in-process."""
    torch.manual_seed(0)
    model = Classifier()
    save_checkpoint(tmp_path / 'c.pt', model, epoch=0)
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (300, 28, 28)).astype(np.float32)
    b = (rng.uniform(0, 1, (200, 1, 32, 32)) ** 3 * 255).astype(np.uint8)
    np.save(tmp_path / 'a.npy', a)
    torch.save(torch.from_numpy(b), tmp_path / 'b.pt')
    model.eval()
    sa = feature_statistics(model, to_model_input(a, 'a'))
    sb = feature_statistics(model, to_model_input(b, 'b'))
    return tmp_path, model, sa, sb

class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

def run_fid(tmp_path, *args, capsys=None):
    """Run `python fid.py ARGS` in this process (capsys given) or in a new one."""
    argv = [*map(str, args), '--checkpoint', str(tmp_path / 'c.pt'), '--out-dir', str(tmp_path / 'out'),
            '--device', 'cpu']
    if capsys is None:
        r = subprocess.run([sys.executable, 'fid.py', *argv], cwd=ROOT, capture_output=True, text=True)
        return Result(r.returncode, r.stdout, r.stderr)
    try:
        fid.main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return Result(code, out, err)

def test_cli_two_files(setup, capsys):
    tmp_path, model, sa, sb = setup
    r = run_fid(tmp_path, tmp_path / 'a.npy', tmp_path / 'b.pt', capsys=capsys)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) == pytest.approx(frechet_distance(*sa, *sb), abs=1e-4)
    r = run_fid(tmp_path, tmp_path / 'a.npy', tmp_path / 'a.npy', capsys=capsys)
    assert float(r.stdout) == pytest.approx(0, abs=1e-4)

def test_cli_against_cached_train_statistics_and_save_stats(setup, capsys):
    tmp_path, model, sa, sb = setup
    # pretend the training set's statistics are sb, cached for this very checkpoint
    sha = hashlib.sha256((tmp_path / 'c.pt').read_bytes()).hexdigest()
    save_stats(tmp_path / 'out' / 'train_stats_pre.npz', *sb, checkpoint_sha256=sha, features='pre')
    r = run_fid(tmp_path, tmp_path / 'a.npy', '--save-stats', tmp_path / 'a_stats.npz', capsys=capsys)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) == pytest.approx(frechet_distance(*sa, *sb), abs=1e-4)
    mu, sigma, meta = load_stats(tmp_path / 'a_stats.npz')
    np.testing.assert_allclose(mu, sa[0], rtol=1e-6)
    assert meta['features'] == 'pre'
    # a saved .npz is an input like any other
    r = run_fid(tmp_path, tmp_path / 'a_stats.npz', tmp_path / 'b.pt', capsys=capsys)
    assert float(r.stdout) == pytest.approx(frechet_distance(*sa, *sb), abs=1e-4)
    r = run_fid(tmp_path, tmp_path / 'a_stats.npz', tmp_path / 'b.pt', '--features', 'post', capsys=capsys)
    assert r.returncode == 1 and 'holds statistics of --features pre' in r.stderr

def test_cli_recomputes_stale_cache(setup, capsys):
    # statistics cached for another checkpoint are recomputed on the real training set
    tmp_path, model, sa, sb = setup
    cache = tmp_path / 'out' / 'train_stats_pre.npz'
    save_stats(cache, *sb, checkpoint_sha256='another checkpoint', features='pre')
    r = run_fid(tmp_path, tmp_path / 'a.npy', capsys=capsys)
    assert r.returncode == 0, r.stderr
    assert 'came from another checkpoint: recomputing' in r.stdout + r.stderr
    mu, sigma, meta = load_stats(cache)
    assert meta['checkpoint_sha256'] == hashlib.sha256((tmp_path / 'c.pt').read_bytes()).hexdigest()
    assert meta['n'] == 60000
    assert float(r.stdout.strip().splitlines()[-1]) == pytest.approx(frechet_distance(*sa, mu, sigma), abs=1e-4)

def test_cli_bad_input_and_few_images(setup, capsys):
    tmp_path, *_ = setup
    np.save(tmp_path / 'nan.npy', np.full((10, 28, 28), np.nan, np.float32))
    r = run_fid(tmp_path, tmp_path / 'nan.npy', tmp_path / 'a.npy')  # a real `python fid.py`
    assert r.returncode == 1 and 'NaN or infinite' in r.stderr and 'nan.npy' in r.stderr
    assert 'Traceback' not in r.stderr
    r = run_fid(tmp_path, tmp_path / 'missing.npy', tmp_path / 'a.npy', capsys=capsys)
    assert r.returncode == 1 and 'missing.npy' in r.stderr
    (tmp_path / 'text.npy').write_text('not numpy')
    r = run_fid(tmp_path, tmp_path / 'text.npy', tmp_path / 'a.npy', capsys=capsys)
    assert r.returncode == 1 and 'not a readable .npy' in r.stderr
    np.save(tmp_path / 'few.npy', np.random.default_rng(0).uniform(0, 1, (20, 28, 28)))
    r = run_fid(tmp_path, tmp_path / 'few.npy', tmp_path / 'a.npy', capsys=capsys)
    assert r.returncode == 0 and 'rank-deficient' in r.stderr

@pytest.mark.parametrize('argv, message', [
    (['a.npy', 'b.npy', 'c.npy'], 'give at most two inputs, got 3'),
    (['a.npy', 'b.npy', '--save-stats', 's.npz'], '--save-stats needs exactly one input'),
    (['a.npy', '--batch-size', '0'], '--batch-size must be at least 1, got 0'),
    (['a.npy', '--device', 'gpu'], "'gpu' is not a torch device"),
])
def test_cli_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        fid.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
