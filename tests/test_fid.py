"""
Tests for fid.py: FID against closed forms and an independent computation, KID against a
double loop over all pairs, precision and recall against point clouds with known answers
and a brute-force computation, the digit metrics against closed forms, bad statistics
files, the yardstick, the cache, the reference table and the command line.
"""

import argparse
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fid
from fid import (classifier_score, embed, frechet_distance, kernel_inception_distance, kl_divergence,
                 knn_radii2, manifold_metrics, mean_cov, mmd2_unbiased, reference, report,
                 report_from_features)
from fid import to_model_input
from mnist import load_mnist, pad, save_npz
from model import Classifier, classifier_id
from networks import network, other_network, save_model

ROOT = Path(__file__).resolve().parent.parent

# -----------------------------------------------------------------------------
# FID

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
    with pytest.raises(ValueError, match=r'sigma2 is not positive semi-definite \(an eigenvalue of -1\)'):
        frechet_distance(mu, s, mu, np.diag([1.0, -1.0, 2.0]))      # would score a distance, not an error
    assert frechet_distance(mu, s, mu, np.diag([1.0, -1e-12, 2.0])) >= 0   # rounding below 0 is fine

# -----------------------------------------------------------------------------
# features and statistics

def test_embed_equals_the_model_and_restores_its_mode():
    torch.manual_seed(0)
    model = Classifier().train()
    x = torch.rand(53, 1, 32, 32)
    for after_relu in (False, True):
        f, p = embed(model, x, after_relu, batch_size=8)              # batches of 8, the last of 5
        model.eval()
        torch.testing.assert_close(f, model.features(x, after_relu=after_relu))
        torch.testing.assert_close(p, model(x).softmax(1))              # dropout off
        model.train()
    assert model.training and f.shape == (53, model.feature_size()) and p.shape == (53, 10)
    # the weights are back in their usual layout (embed stores the channels last on the CPU),
    # also when a batch fails half-way (Ctrl-C)
    assert all(w.is_contiguous() for w in model.parameters())
    calls = []
    def fail_second(x, after_relu):
        conv = next(m for m in model.layers if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)   # 4-d weights
        calls.append(conv.weight.is_contiguous(memory_format=torch.channels_last))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return Classifier.features_and_logits(model, x, after_relu)
    model.features_and_logits = fail_second
    with pytest.raises(KeyboardInterrupt):
        embed(model, x, batch_size=8)
    assert calls == [True, True]                                      # the fast layout was used
    assert model.training and all(w.is_contiguous() for w in model.parameters())

def test_mean_cov_equals_numpy_also_with_a_large_mean():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((500, 7)) * 1e-3 + 1e4                     # mean 1e7 times the spread
    mu, sigma = mean_cov(torch.from_numpy(f))
    np.testing.assert_allclose(mu, f.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f, rowvar=False), rtol=1e-6)
    with pytest.raises(ValueError, match='at least 2 images'):
        mean_cov(torch.zeros(1, 3))

# -----------------------------------------------------------------------------
# KID

def kid_by_loops(x, y):
    """The unbiased MMD^2 written out pair by pair, in float64."""
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy

def test_mmd2_equals_a_double_loop_over_all_pairs():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((12, 5)), rng.standard_normal((9, 5)) + 0.3
    got = mmd2_unbiased(torch.from_numpy(x), torch.from_numpy(y))
    assert got == pytest.approx(kid_by_loops(x, y), rel=1e-12)

def test_kid_with_subsets_as_large_as_the_sets_is_the_full_mmd():
    # every subset is then the whole set in another order: the same value each time
    rng = np.random.default_rng(1)
    x, y = torch.from_numpy(rng.standard_normal((15, 4))), torch.from_numpy(rng.standard_normal((15, 4)) + 0.2)
    mean, std, m = kernel_inception_distance(x, y, subsets=5, subset_size=50)
    assert m == 15 and std < 1e-12
    assert mean == pytest.approx(kid_by_loops(x.numpy(), y.numpy()), rel=1e-10)

def test_kid_subsets_are_drawn_without_replacement_from_the_seed():
    rng = np.random.default_rng(2)
    x, y = torch.from_numpy(rng.standard_normal((15, 4))), torch.from_numpy(rng.standard_normal((20, 4)))
    g = torch.Generator().manual_seed(7)
    ix, iy = torch.randperm(15, generator=g)[:10], torch.randperm(20, generator=g)[:10]
    mean, std, m = kernel_inception_distance(x, y, subsets=1, subset_size=10, seed=7)
    assert m == 10 and mean == pytest.approx(kid_by_loops(x[ix].numpy(), y[iy].numpy()), rel=1e-10)
    assert kernel_inception_distance(y, x, subsets=1, subset_size=50)[2] == 15   # the smaller side

def test_kid_is_about_zero_for_one_distribution_and_positive_for_a_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3000, 16, generator=g), torch.randn(3000, 16, generator=g)
    mean, std, m = kernel_inception_distance(a, b, subsets=50)
    assert m == 1000 and abs(mean) < 3 * std / math.sqrt(50) + 1e-4
    shifted, shifted_std, _ = kernel_inception_distance(a, b + 0.3, subsets=50)
    assert shifted > 20 * std / math.sqrt(50) and shifted > 0
    # unbiased, so not clipped: single draws of one distribution fall below 0 about half the time
    values = [mmd2_unbiased(torch.randn(50, 4, generator=g), torch.randn(50, 4, generator=g)) for _ in range(40)]
    assert 5 < sum(v < 0 for v in values) < 35

def test_kid_is_float64_also_for_float32_features():
    # pre-ReLU-like features (around -50): kernel values near 1e10, whose sums cancel;
    # in float32 the result would be off by thousands
    g = torch.Generator().manual_seed(0)
    f1 = (torch.randn(300, 128, generator=g) * 5 - 50).float()
    f2 = (torch.randn(300, 128, generator=g) * 5 - 50).float()
    got = kernel_inception_distance(f1, f2, subsets=3, subset_size=200)
    exact = kernel_inception_distance(f1.double(), f2.double(), subsets=3, subset_size=200)
    assert got[0] == pytest.approx(exact[0], rel=1e-9) and got[1] == pytest.approx(exact[1], rel=1e-6)

def test_kid_seed_and_too_few():
    x, y = torch.randn(300, 8), torch.randn(300, 8)
    assert kernel_inception_distance(x, y, 10, 100, seed=1) == kernel_inception_distance(x, y, 10, 100, seed=1)
    assert kernel_inception_distance(x, y, 10, 100, seed=1) != kernel_inception_distance(x, y, 10, 100, seed=2)
    with pytest.raises(ValueError, match='at least 2 images on each side'):
        kernel_inception_distance(x[:1], y)

# -----------------------------------------------------------------------------
# precision, recall, density and coverage

def radii(a, k):
    """Distance from each point of a to its k-th nearest other point, by sorting, in float64."""
    return [sorted(np.linalg.norm(a - p, axis=1))[k] for p in a]   # [0] is the point itself

def pr_brute_force(gen, real, k=3):
    """Precision and recall with explicit loops over points, in float64."""
    def inside(points, centres, r):
        return np.mean([any(np.linalg.norm(c - p) <= rc for c, rc in zip(centres, r)) for p in points])
    return inside(gen, real, radii(real, k)), inside(real, gen, radii(gen, k))

def dc_brute_force(gen, real, k=5):
    """Density and coverage as Naeem et al. write them, pair by pair, in float64."""
    r = radii(real, k)
    inside = [[np.linalg.norm(y - x) <= rx for x, rx in zip(real, r)] for y in gen]   # [gen][real]
    density = sum(map(sum, inside)) / (k * len(gen))
    coverage = np.mean([any(row[i] for row in inside) for i in range(len(real))])
    return density, coverage

def test_manifold_metrics_against_brute_force():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((60, 3))
    gen = rng.standard_normal((45, 3)) * 0.6 + 0.8                     # narrower, shifted
    p, r, d, c = manifold_metrics(torch.from_numpy(gen).float(), torch.from_numpy(real).float(), block=7)
    bp, br = pr_brute_force(gen, real)
    bd, bc = dc_brute_force(gen, real)
    assert (p, r) == pytest.approx((bp, br), abs=1e-12) and 0 < p < 1 and 0 < r < 1
    assert (d, c) == pytest.approx((bd, bc), abs=1e-12) and 0 < c < 1 and d != p
    assert knn_radii2(torch.from_numpy(real), k=1, block=5)[0] == pytest.approx(
        min(((real[1:] - real[0]) ** 2).sum(1)))
    # the cached radii give the same numbers as radii computed on the spot
    t_real = torch.from_numpy(real).float()
    cached = manifold_metrics(torch.from_numpy(gen).float(), t_real, knn_radii2(t_real, fid.PRECISION_K),
                              knn_radii2(t_real, fid.DENSITY_K))
    assert cached == (p, r, d, c)

def clusters(centres, n_each, rng, spread=0.05):
    return torch.from_numpy(np.concatenate([c + spread * rng.standard_normal((n_each, 2)) for c in centres])).float()

def test_manifold_metrics_on_known_point_clouds():
    rng = np.random.default_rng(1)
    centres = [(10.0 * i, 0.0) for i in range(10)]
    real = clusters(centres, 100, rng)
    # identical sets: each ball holds its own centre and the centre's k nearest neighbours,
    # so density = (k + 1) / k exactly, and everything is covered. Integer coordinates keep
    # every squared distance exact in float32, so no point on a ball's rim is lost to rounding
    points = torch.from_numpy(rng.choice(1000, size=(300, 3))).float()
    assert manifold_metrics(points, points) == (1.0, 1.0, (fid.DENSITY_K + 1) / fid.DENSITY_K, 1.0)
    # a new sample of the same distribution: density about 1
    p, r, d, c = manifold_metrics(torch.randn(3000, 2, dtype=torch.float64), torch.randn(3000, 2, dtype=torch.float64))
    assert 0.9 < d < 1.1 and 0.9 < c < 1
    far = real + 1000
    assert manifold_metrics(far, real) == (0.0, 0.0, 0.0, 0.0)        # far apart
    half = clusters(centres[:5], 200, rng)                           # covers half the clusters
    p, r, d, c = manifold_metrics(half, real)
    assert p > 0.95 and 0.45 < r < 0.55 and 0.45 < c < 0.55
    with pytest.raises(ValueError, match='at least k \\+ 1 = 6 images'):
        manifold_metrics(real[:5], real)

# -----------------------------------------------------------------------------
# digits

def test_classifier_score_closed_forms():
    even = torch.eye(10).repeat(7, 1)                                 # confident, every digit alike
    assert classifier_score(even) == pytest.approx(10)
    one = torch.zeros(50, 10)
    one[:, 3] = 1
    assert classifier_score(one) == pytest.approx(1)
    assert classifier_score(torch.full((20, 10), 0.1)) == pytest.approx(1)   # no confidence
    # two digits, each predicted with certainty: exp(log 2)
    assert classifier_score(torch.eye(10)[[0, 1] * 5]) == pytest.approx(2)

def test_digit_mix_kl():
    q = torch.tensor([0.1] * 10)
    assert kl_divergence(q, q) == 0
    p = torch.tensor([0.2] * 5 + [0.0] * 5)                           # half the digits missing
    assert kl_divergence(p, q) == pytest.approx(math.log(2))

def test_report_digits_against_a_direct_count():
    torch.manual_seed(0)
    f_real, f_gen = torch.randn(400, 128), torch.randn(300, 128)
    pred_real = torch.arange(400) % 10
    probs = F.one_hot(torch.arange(300) % 5, 10).float() * 0.9 + 0.01   # digits 0-4 only, p 0.91
    r = report_from_features(f_gen, probs, reference(f_real, pred_real))
    assert r['digits_present'] == 5 and r['digit_kl'] == pytest.approx(math.log(2))
    assert r['confidence'] == pytest.approx(0.91) and r['classifier_score'] < 5.1
    # per digit: the confidence and KID of that digit's samples against that digit's real ones
    sure = probs * torch.linspace(0.5, 1, 300)[:, None]              # confidence varies by sample
    r2 = report_from_features(f_gen, sure, reference(f_real, pred_real), seed=3)
    for d in (0, 4):
        mine = torch.arange(300) % 5 == d
        assert r2['digits'][d]['confidence'] == pytest.approx(sure[mine].max(1).values.double().mean().item())
        assert r2['digits'][d]['kid'] == pytest.approx(
            kernel_inception_distance(f_gen[mine], f_real[pred_real == d], fid.KID_DIGIT_SUBSETS, seed=3)[0])
    assert [d['n'] for d in r['digits']] == [60] * 5 + [0] * 5
    assert r['digits'][0]['share'] == pytest.approx(0.2) and r['digits'][0]['real_share'] == pytest.approx(0.1)
    assert math.isnan(r['digits'][7]['kid']) and not math.isnan(r['digits'][2]['kid'])
    stray = probs.clone()
    stray[0] = F.one_hot(torch.tensor(9), 10)                         # 1 of 300 samples a 9: under 1%
    assert report_from_features(f_gen, stray, reference(f_real, pred_real))['digits_present'] == 5
    assert r['fid'] == pytest.approx(frechet_distance(*mean_cov(f_gen), *mean_cov(f_real)))
    # all 300 and all 400 rows take part (in another order): the same four numbers as on the spot
    assert (r['precision'], r['recall'], r['density'], r['coverage']) == pytest.approx(manifold_metrics(f_gen, f_real))
    assert (r['n'], r['n_real'], r['pr_n'], r['pr_n_real'], r['kid_subset']) == (300, 400, 300, 400, 300)
    assert any('KID on subsets of 300' in w for w in r['warnings'])
    assert any('rank-deficient' in w for w in report_from_features(f_gen[:50], probs[:50], reference(f_real, pred_real))['warnings'])
    tiny = report_from_features(f_gen[:3], probs[:3], reference(f_real, pred_real))
    assert math.isnan(tiny['precision']) and math.isnan(tiny['density']) and any('at least 6 images' in w for w in tiny['warnings'])


# -----------------------------------------------------------------------------
# the report, the cache, the reference table and the command line, on a small model and set

@pytest.fixture(scope='module')
def small_mnist():
    """600 training and 300 validation digits of the real MNIST."""
    try:
        x_train, y_train, x_val, y_val = load_mnist(ROOT / 'data')
    except FileNotFoundError as e:
        pytest.fail(f'these tests need the four real MNIST files in {ROOT / "data"} '
                    f'(put the four .gz files there, or let mnist.py download them):\n{e}')
    return x_train[:600], y_train[:600], x_val[:300], y_val[:300]

@pytest.fixture
def setup(tmp_path, small_mnist, monkeypatch):
    """A random model's checkpoint; fid.py's training set is the 600 digits."""
    torch.manual_seed(0)
    model = Classifier().eval()
    save_model(tmp_path / 'c.pt', model, epoch=0)
    monkeypatch.setattr(fid, 'load_mnist', lambda data_dir: small_mnist)
    return tmp_path, model

def run_fid(tmp_path, capsys, *args):
    """`python fid.py ARGS`, in this process: (exit code, stdout, stderr)."""
    argv = [*map(str, args), '--checkpoint', str(tmp_path / 'c.pt'), '--out-dir', str(tmp_path / 'out'),
            '--device', 'cpu']
    try:
        fid.main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err

def test_train_reference_is_cached_per_checkpoint_and_features(setup, small_mnist, capsys, monkeypatch):
    tmp_path, model = setup
    ref = fid.train_reference(model, tmp_path / 'c.pt', out_dir=tmp_path)
    f, p = embed(model, small_mnist[0][:, None])
    torch.testing.assert_close(ref['f'], f)
    np.testing.assert_allclose(ref['mu'], mean_cov(f)[0])
    assert 'wrote' in capsys.readouterr().err
    again = fid.train_reference(model, tmp_path / 'c.pt', out_dir=tmp_path)   # from the cache
    assert capsys.readouterr().err == ''
    for key in ('f', 'pred', 'radii2', 'radii2_dc', 'pr_idx'):
        assert torch.equal(again[key], ref[key]), key
    pre = fid.train_reference(model, tmp_path / 'c.pt', out_dir=tmp_path, after_relu=False)
    torch.testing.assert_close(pre['f'], embed(model, small_mnist[0][:, None], after_relu=False)[0])
    # another checkpoint at the same path: recomputed
    other = Classifier().eval()
    save_model(tmp_path / 'c.pt', other, epoch=1)
    capsys.readouterr()
    new = fid.train_reference(other, tmp_path / 'c.pt', out_dir=tmp_path)
    assert 'was made by another classifier, data or version: recomputing' in capsys.readouterr().err
    torch.testing.assert_close(new['f'], embed(other, small_mnist[0][:, None])[0])
    # a file at the cache's name that fid.py did not write, or one cut short: recomputed
    cache = tmp_path / 'train_reference_post.npz'
    whole = cache.read_bytes()
    for damaged in (b'garbage', whole[:len(whole) // 2]):
        cache.write_bytes(damaged)
        again = fid.train_reference(other, tmp_path / 'c.pt', out_dir=tmp_path)
        assert 'is damaged or not a cache written by this code: recomputing' in capsys.readouterr().err
        torch.testing.assert_close(again['f'], new['f'])
    # other data (a new MNIST checksum) or an older cache format: recomputed
    monkeypatch.setattr(fid, 'DATA_ID', 'other data')
    fid.train_reference(other, tmp_path / 'c.pt', out_dir=tmp_path)
    assert 'was made by another' in capsys.readouterr().err
    monkeypatch.setattr(fid, 'REFERENCE_VERSION', 1)
    fid.train_reference(other, tmp_path / 'c.pt', out_dir=tmp_path)
    assert 'was made by another' in capsys.readouterr().err

def test_each_cache_has_its_own_version(setup, monkeypatch, capsys):
    # the copy cache holds pixels only: a new feature-cache version must not rebuild it
    tmp_path, _ = setup
    built = fid.train_copy_reference(out_dir=tmp_path)
    assert 'wrote' in capsys.readouterr().err
    monkeypatch.setattr(fid, 'REFERENCE_VERSION', fid.REFERENCE_VERSION + 1)
    cached = fid.train_copy_reference(out_dir=tmp_path)
    assert capsys.readouterr().err == ''                              # read from the cache, unchanged
    assert cached['tau'] == built['tau'] and all(torch.equal(cached[k], built[k]) for k in ('train', 'mean', 'axes', 'z'))
    assert cached['tau'] == np.load(tmp_path / 'train_copies.npz')['tau']   # as computed, not altered on the way
    monkeypatch.setattr(fid, 'COPIES_VERSION', fid.COPIES_VERSION + 1)
    fid.train_copy_reference(out_dir=tmp_path)
    assert 'was made by another classifier, data or version: recomputing' in capsys.readouterr().err

def test_report_of_images_equals_the_report_of_their_features(setup, small_mnist):
    tmp_path, model = setup
    ref = fid.train_reference(model, tmp_path / 'c.pt', out_dir=tmp_path)
    x = small_mnist[2][:, 2:30, 2:30]                                 # (300, 28, 28) as a generator writes them
    r = report(model, x, ref, classifier='abc')
    direct = report_from_features(*embed(model, pad(x)[:, None]), ref)
    for key in ('fid', 'kid', 'kid_std', 'precision', 'recall', 'classifier_score', 'digit_kl', 'digits_present'):
        assert r[key] == direct[key], key
    assert r['classifier'] == 'abc' and r['features'] == 'post' and r['n'] == 300

def test_reference_table_on_a_small_set(setup, small_mnist, capsys):
    tmp_path, model = setup
    x_train, y_train, x_val, y_val = small_mnist
    args = argparse.Namespace(features='post', seed=0, batch_size=128, out_dir=tmp_path)
    ref = fid.train_reference(model, tmp_path / 'c.pt', out_dir=tmp_path)
    assert torch.equal(ref['copy']['z'], fid.copy_reference(x_train[:, None], x_val[:, None])['z'])   # the copy search
    results = fid.reference_table(model, ref, x_train[:, None], x_val[:, None], y_val, args, 'abc')
    out = capsys.readouterr().out
    assert list(results) == ['validation set vs train', 'validation digits 0-4 only', 'validation blurred (3x3 box)',
                             'validation + noise sigma 0.1', 'validation + noise sigma 0.5', 'Gaussian noise vs train',
                             'training digits, copied', 'training digits moved 1 pixel', 'half copies, half validation']
    assert results['validation digits 0-4 only']['n'] == int((y_val < 5).sum())
    fid_of = lambda x: frechet_distance(*mean_cov(embed(model, x)[0]), ref['mu'], ref['sigma'])
    assert results['validation set vs train']['fid'] == pytest.approx(fid_of(x_val[:, None]))
    blurred = F.avg_pool2d(x_val[:, None], 3, stride=1, padding=1)  # an independent 3x3 box filter
    assert results['validation blurred (3x3 box)']['fid'] == pytest.approx(fid_of(blurred))
    # the memorisers: 300 of the 600 training digits, as they are, moved, and half of them
    assert results['training digits, copied']['copies'] == 1.0
    assert results['training digits moved 1 pixel']['copies'] == 1.0
    assert results['training digits moved 1 pixel']['fid'] != results['training digits, copied']['fid']
    assert 0.48 <= results['half copies, half validation']['copies'] <= 0.52
    assert results['validation set vs train']['copies'] == pytest.approx(0.01)   # calibrated on these
    assert results['Gaussian noise vs train']['copies'] == 0
    assert '| validation set vs train | 300 |' in out and '| 0.30 |' in out and '| 100.0% |' in out
    assert 'yardstick: classifier abc | features post' in out
    assert not list(tmp_path.glob('*.png'))   # the table draws no figures

def test_cli_report_card(setup, small_mnist, capsys):
    tmp_path, model = setup
    np.save(tmp_path / 'gen.npy', (small_mnist[2][:, 2:30, 2:30].numpy() * 255).round().astype(np.uint8))
    code, out, err = run_fid(tmp_path, capsys, tmp_path / 'gen.npy', '--save-stats', tmp_path / 's.npz')
    assert code == 0, err
    ref = fid.train_reference(model, tmp_path / 'c.pt', out_dir=tmp_path / 'out')
    r = report(model, np.load(tmp_path / 'gen.npy'), ref)
    cid = hashlib.sha256((tmp_path / 'c.pt').read_bytes()).hexdigest()[:12]
    assert f'{r["fid"]:10.4f}' in out
    assert f'{r["kid"]:10.4g}' in out and f'{r["precision"]:10.3f}' in out and f'{r["recall"]:10.3f}' in out
    assert f'yardstick: classifier {cid} | features post ({model.feature_size()}) | N 300 vs 600' in out
    assert f'classifier {cid} ({tmp_path / "c.pt"}): {model.summary()}' in out     # the network it measures with
    assert f"'images': '{tmp_path / 'gen.npy'}', 'features': 'post'" in out        # the configuration, first
    assert 'scored in' in out and 'rank-deficient' not in err
    assert (tmp_path / 'out' / 'gen_copies.png').read_bytes()[:4] == b'\x89PNG'
    # --save-stats: mu and sigma of these images, with the yardstick they were measured by
    stats = np.load(tmp_path / 's.npz')
    assert (stats['classifier'], stats['features'], stats['n']) == (cid, 'post', 300)
    f = embed(model, pad(torch.from_numpy(np.load(tmp_path / 'gen.npy')).float() / 255)[:, None])[0]
    np.testing.assert_allclose(stats['mu'], mean_cov(f)[0], rtol=1e-6)
    np.testing.assert_allclose(stats['sigma'], mean_cov(f)[1], rtol=1e-5, atol=1e-9)
    assert run_fid(tmp_path, capsys, tmp_path / 'gen.npy', '--features', 'pre', '--save-stats', tmp_path / 'p.npz')[0] == 0
    assert np.load(tmp_path / 'p.npz')['features'] == 'pre'

def test_cli_warns_for_few_images(setup, capsys):
    tmp_path, _ = setup
    np.save(tmp_path / 'few.npy', np.random.default_rng(0).uniform(0, 1, (20, 28, 28)))
    code, out, err = run_fid(tmp_path, capsys, tmp_path / 'few.npy')
    assert code == 0 and 'rank-deficient' in err and 'KID on subsets of 20' in err

def test_cli_bad_input(setup, capsys):
    tmp_path, _ = setup
    np.save(tmp_path / 'nan.npy', np.full((10, 28, 28), np.nan, np.float32))
    np.save(tmp_path / 'signed.npy', np.full((10, 28, 28), -0.5, np.float32))
    (tmp_path / 'empty.npy').write_bytes(b'')
    for name, message in (('nan.npy', 'NaN or infinite'), ('signed.npy', '(x + 1) / 2'),
                          ('empty.npy', 'not a readable .npy'), ('missing.npy', 'no such file')):
        code, out, err = run_fid(tmp_path, capsys, tmp_path / name)
        assert code == 1 and message in err and name in err and 'Traceback' not in err, name

@pytest.mark.parametrize('argv, message', [
    (['a.npy', 'b.npy'], 'unrecognized arguments: b.npy'),
    (['--save-stats', 's.npz'], '--save-stats needs images'),
    (['a.npy', '--batch-size', '0'], '--batch-size must be at least 1, got 0'),
    (['a.npy', '--device', 'gpu'], "'gpu' is not a torch device"),
    (['a.npy', '--features', 'mid'], "invalid choice: 'mid'"),
])
def test_cli_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        fid.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err

def test_cli_flags_reach_the_report(setup, small_mnist, monkeypatch, capsys):
    tmp_path, model = setup
    np.save(tmp_path / 'gen.npy', small_mnist[2][:, 2:30, 2:30].numpy())
    asked, batches = [], []
    monkeypatch.setattr(fid, 'load_mnist', lambda data_dir: (asked.append(data_dir), small_mnist)[1])
    real_embed = fid.embed
    monkeypatch.setattr(fid, 'embed', lambda *a: (batches.append(a[3]), real_embed(*a))[1])
    code, out0, err = run_fid(tmp_path, capsys, tmp_path / 'gen.npy', '--data-dir', 'elsewhere', '--batch-size', 64)
    assert code == 0, err
    assert set(asked) == {'elsewhere'} and set(batches) == {64}   # both caches built from --data-dir
    # --seed draws other KID subsets: another KID, the same FID
    code, out1, err = run_fid(tmp_path, capsys, tmp_path / 'gen.npy', '--seed', 1)
    line = lambda out, name: next(l for l in out.splitlines() if l.strip().startswith(name))
    assert line(out0, 'FID') == line(out1, 'FID') and line(out0, 'KID') != line(out1, 'KID')
    # --features pre: the pre-ReLU features, and a yardstick that says so
    code, out, err = run_fid(tmp_path, capsys, tmp_path / 'gen.npy', '--features', 'pre')
    f_real = embed(model, small_mnist[0][:, None], after_relu=False)[0]
    f_gen = embed(model, small_mnist[2][:, None], after_relu=False)[0]
    assert f'{frechet_distance(*mean_cov(f_gen), *mean_cov(f_real)):10.4f}' in out
    assert f'| features pre ({model.feature_size()}) |' in out and 'real vs real at 10,000' not in out

def test_precision_recall_use_a_random_subset_of_at_most_pr_n(monkeypatch):
    # 400 generated points: the first 100 far away, the rest on the real points; with
    # MANIFOLD_N = 100 the report must draw 100 at random (about 3/4 of them good), not the first 100
    monkeypatch.setattr(fid, 'MANIFOLD_N', 100)
    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 8, generator=g)
    gen = torch.cat([torch.randn(100, 8, generator=g) + 100, real[torch.randint(0, 300, (300,), generator=g)]])
    probs = torch.full((400, 10), 0.1)
    r = report_from_features(gen, probs, reference(real, torch.arange(300) % 10))
    assert (r['pr_n'], r['pr_n_real']) == (100, 100)
    assert 0.6 < r['precision'] < 0.9

# -----------------------------------------------------------------------------
# copies of the training set

def test_recentre_undoes_whole_pixel_shifts():
    x = load_mnist(ROOT / 'data')[2][:200]                           # (200, 32, 32) test digits
    centred = fid.recentre(x)
    for dy, dx in ((1, 0), (0, -1), (2, 2), (-3, 1)):
        assert torch.equal(fid.recentre(x.roll((dy, dx), dims=(1, 2))), centred)
    # the centre of mass of every re-centred digit is within half a pixel of (16, 16)
    r = torch.arange(32.0)
    mass = centred.sum((1, 2))
    cy, cx = (centred.sum(2) * r).sum(1) / mass, (centred.sum(1) * r).sum(1) / mass
    assert (cy - 16).abs().max() <= 0.5 and (cx - 16).abs().max() <= 0.5
    assert torch.equal(fid.recentre(torch.zeros(2, 32, 32)), torch.zeros(2, 32, 32))   # blank: no NaN

def test_nearest_two_against_brute_force(monkeypatch):
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (50, 1, 32, 32), generator=g) / 255 * (torch.rand(50, 1, 32, 32, generator=g) > 0.8)
    x = torch.rand(30, 1, 32, 32, generator=g) * 0.5
    x[:5] = train[[7, 3, 3, 40, 0]]                                   # five exact copies
    monkeypatch.setattr(fid, 'COPY_CANDIDATES', 50)                   # every training image a candidate
    copy_ref = fid.copy_reference(train, train[:10])
    ratio, d1, j = fid.nearest_two(x, copy_ref, block=7, chunk=16)  # chunks of 16, 16, 16 and 2 training images
    t = fid.recentre(train[:, 0]).flatten(1)                          # (50, 1024)
    d = torch.cdist(fid.recentre(x[:, 0]).flatten(1).double(), t.double())   # (30, 50) every distance
    top2 = d.topk(2, 1, largest=False)
    torch.testing.assert_close(d1.double(), top2.values[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ratio.double(), top2.values[:, 0] / top2.values[:, 1], rtol=1e-5, atol=1e-5)
    assert torch.equal(j, top2.indices[:, 0]) and j[:5].tolist() == [7, 3, 3, 40, 0]
    assert (ratio[:5] == 0).all()
    # with 8 candidates out of chunks of 16: the copies still find their originals
    monkeypatch.setattr(fid, 'COPY_CANDIDATES', 8)
    assert fid.nearest_two(x, copy_ref, chunk=16)[2][:5].tolist() == [7, 3, 3, 40, 0]

def test_tau_is_the_share_of_the_calibration_digits():
    x_train, _, x_val, _ = load_mnist(ROOT / 'data')
    copy_ref = fid.copy_reference(x_train[:2000, None], x_val[:700, None])
    ratio = fid.nearest_two(x_val[:700, None], copy_ref)[0]
    assert int((ratio <= copy_ref['tau']).sum()) == math.ceil(fid.COPY_RATE * 700)  # 7 of 700
    assert copy_ref['train'].dtype == torch.uint8 and torch.equal(
        copy_ref['train'].float() / 255, fid.recentre(x_train[:2000]).flatten(1))  # exact as uint8

@pytest.fixture(scope='module')
def memorisers():
    """The copy reference of 5,000 real training digits, calibrated on 1,000 test digits;
    1,000 training digits to copy from, and 2,000 other test digits as new digits."""
    x_train, _, x_val, _ = load_mnist(ROOT / 'data')
    copy_ref = fid.copy_reference(x_train[:5000, None], x_val[:1000, None])
    g = torch.Generator().manual_seed(0)
    copied = x_train[torch.randperm(5000, generator=g)[:1000], None]  # (1000, 1, 32, 32)
    return copy_ref, copied, x_val[1000:3000, None], g

def test_copies_of_every_kind_are_found(memorisers):
    copy_ref, copied, new, g = memorisers
    rate = lambda x: fid.copies(x, copy_ref)[0]
    assert rate(copied) >= 0.95
    assert 0.45 <= rate(torch.cat([copied[:500], new[:500]])) <= 0.55
    for shift in ((0, 1), (1, 0), (-1, 1), (2, 0), (2, -2)):          # moved by 1 and by 2 pixels
        assert rate(copied.roll(shift, dims=(2, 3))) >= 0.9, shift
    noisy = (copied + 0.05 * torch.randn(copied.shape, generator=g)).clamp(0, 1)
    assert rate(noisy) >= 0.85

def test_new_digits_however_bad_are_not_copies(memorisers):
    copy_ref, copied, new, g = memorisers
    rate = lambda x: fid.copies(x, copy_ref)[0]
    assert rate(new) <= 0.02                                          # new digits: about COPY_RATE
    assert rate(fid.blur(new)) <= 0.005
    assert rate(torch.rand(1000, 1, 32, 32, generator=g)) == 0
    assert rate(torch.zeros(10, 1, 32, 32)) == 0                     # blank images

def test_score_equals_the_cli_and_draws_the_copies(setup, small_mnist, monkeypatch, capsys):
    tmp_path, model = setup
    x = small_mnist[0][:200, 2:30, 2:30].numpy()                      # 200 training digits, copied
    np.save(tmp_path / 'gen.npy', x)
    printed = {}
    monkeypatch.setattr(fid, 'print_report', lambda r, name, real_name: printed.update(r))
    code, out, err = run_fid(tmp_path, capsys, tmp_path / 'gen.npy', '--seed', 2)
    assert code == 0, err
    r = fid.score(torch.from_numpy(x), checkpoint=tmp_path / 'c.pt', out_dir=tmp_path / 'out', device='cpu', seed=2)
    for key in ('fid', 'kid', 'precision', 'recall', 'density', 'coverage', 'copies', 'classifier_score',
                'digit_kl', 'classifier', 'features', 'n'):
        assert r[key] == printed[key], key
    assert r['copies'] == 1.0 and r['classifier'] == classifier_id(tmp_path / 'c.pt')
    for key in ('copy_ratio', 'copy_distance', 'nearest_train', 'pred', 'confidence'):
        assert torch.equal(r['per_sample'][key], printed['per_sample'][key]), key
    # score()'s features flag reaches the report
    pre = fid.score(torch.from_numpy(x), checkpoint=tmp_path / 'c.pt', out_dir=tmp_path / 'out', device='cpu',
                    features='pre')
    f_pre = embed(model, pad(torch.from_numpy(x))[:, None], after_relu=False)[0]
    f_real = embed(model, small_mnist[0][:, None], after_relu=False)[0]
    assert pre['features'] == 'pre' and pre['fid'] == pytest.approx(frechet_distance(*mean_cov(f_pre), *mean_cov(f_real)))
    assert torch.equal(r['per_sample']['nearest_train'], torch.arange(200))   # each copy found its original
    assert (tmp_path / 'out' / 'gen_copies.png').read_bytes()[:4] == b'\x89PNG'
    # the figure: each sample beside its nearest training digit, the most copy-like first
    drawn = {}
    monkeypatch.setattr(fid, 'plot_tiles', lambda tiles, path, title, **kw: drawn.update(tiles=tiles, title=title, **kw))
    copy_ref = fid.train_copy_reference(out_dir=tmp_path / 'out')
    fid.plot_copies(to_model_input(x, 'x'), r, copy_ref, tmp_path / 'c.png', n=6, per_row=4)
    tiles = drawn['tiles']                                            # (2, 8, 32, 32): 4 pairs a row
    assert tiles.shape == (2, 8, 32, 32) and np.isnan(tiles[1, 4:]).all()   # 6 pairs, then blanks
    first = int(r['per_sample']['copy_ratio'].argsort()[0])
    np.testing.assert_array_equal(tiles[0, 0], fid.recentre(pad(torch.from_numpy(x[first:first + 1])))[0].numpy())
    np.testing.assert_array_equal(tiles[0, 0], tiles[0, 1])          # an exact copy beside its original
    assert drawn['tile_labels'][0][:2] == ['r 0.00', 'd 0.0'] and '100.0% copies' in drawn['title']

def test_save_stats_never_writes_over_the_input_and_seed_range(setup, small_mnist, capsys):
    tmp_path, _ = setup
    np.save(tmp_path / 'gen.npy', small_mnist[2][:50].numpy())
    before = (tmp_path / 'gen.npy').read_bytes()
    for argv in (['--save-stats', tmp_path / 'gen.npy'], ['--seed', -1], ['--save-stats', tmp_path / 'gen.npz.bak']):
        with pytest.raises(SystemExit) as e:
            fid.main([str(tmp_path / 'gen.npy'), *map(str, argv)])
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert 'gen.npy: statistics files end in .npz' in err and 'argument --seed: -1 is not in [0, 2**64)' in err
    assert 'gen.npz.bak: statistics files end in .npz' in err
    assert (tmp_path / 'gen.npy').read_bytes() == before

def test_cli_ctrl_c_and_an_unusable_out_dir(setup, small_mnist, monkeypatch, capsys):
    tmp_path, _ = setup
    np.save(tmp_path / 'gen.npy', small_mnist[2][:50].numpy())
    real_embed = fid.embed
    def interrupted(*a, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(fid, 'embed', interrupted)                    # Ctrl-C while building the cache
    code, out, err = run_fid(tmp_path, capsys, tmp_path / 'gen.npy')
    assert code == 130 and 'interrupted' in err and 'Traceback' not in err
    assert [p.name for p in (tmp_path / 'out').iterdir() if p.name.startswith('.')] == []
    monkeypatch.setattr(fid, 'embed', real_embed)
    (tmp_path / 'file').write_bytes(b'')
    with pytest.raises(SystemExit) as e:
        fid.main([str(tmp_path / 'gen.npy'), '--checkpoint', str(tmp_path / 'c.pt'), '--out-dir', str(tmp_path / 'file')])
    assert e.value.code == 1 and f'cannot write into {tmp_path / "file"}/' in capsys.readouterr().err

def test_save_stats_into_a_folder_in_the_way(setup, small_mnist, capsys):
    tmp_path, _ = setup
    np.save(tmp_path / 'gen.npy', small_mnist[2][:50].numpy())
    (tmp_path / 's.npz').mkdir()
    code, out, err = run_fid(tmp_path, capsys, tmp_path / 'gen.npy', '--save-stats', tmp_path / 's.npz')
    assert code == 1 and f'cannot write {tmp_path / "s.npz"}: a folder is in the way' in err and 'Traceback' not in err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []

def test_cli_damaged_files_are_one_line_each(setup, small_mnist, capsys):
    tmp_path, model = setup
    np.save(tmp_path / 'images.npy', small_mnist[2][:20].numpy())
    whole = (tmp_path / 'images.npy').read_bytes()
    (tmp_path / 'cut.npy').write_bytes(whole[:len(whole) // 2])          # cut short
    np.savez(tmp_path / 'archive.npz', x=small_mnist[2][:20].numpy())
    (tmp_path / 'archive.npz').rename(tmp_path / 'renamed.npy')          # an archive, not an array
    (tmp_path / 'images.npy').rename(tmp_path / 'images.npz')            # not a file of images
    torch.save(small_mnist[2][:20].to_sparse(), tmp_path / 'sparse.pt')
    nan = {k: v.clone().fill_(float('nan')) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({'model': nan, 'architecture': model.architecture(), 'epoch': 3}, tmp_path / 'nan.pt')
    np.save(tmp_path / 'gen.npy', small_mnist[2][:20].numpy())
    for argv, named in (([tmp_path / 'cut.npy'], 'cut.npy'), ([tmp_path / 'renamed.npy'], 'renamed.npy'),
                        ([tmp_path / 'images.npz'], 'images.npz'),
                        ([tmp_path / 'sparse.pt'], 'sparse.pt'),
                        ([tmp_path / 'gen.npy', '--checkpoint', tmp_path / 'nan.pt'], 'nan.pt')):
        with pytest.raises(SystemExit) as e:
            fid.main([*map(str, argv), '--out-dir', str(tmp_path / 'out'), '--device', 'cpu',
                      *(['--checkpoint', str(tmp_path / 'c.pt')] if '--checkpoint' not in argv else [])])
        err = capsys.readouterr().err
        assert e.value.code == 1 and named in err and err.count('\n') == 1 and 'Traceback' not in err, named
    assert [p.name for p in tmp_path.rglob('.*')] == []                # no temporary file anywhere

def test_save_stats_says_when_it_replaces_a_file(setup, small_mnist, capsys):
    tmp_path, _ = setup
    np.save(tmp_path / 'gen.npy', small_mnist[2][:50].numpy())
    code, out, err = run_fid(tmp_path, capsys, tmp_path / 'gen.npy', '--save-stats', tmp_path / 's.npz')
    assert code == 0 and 'replaced' not in out
    code, out, err = run_fid(tmp_path, capsys, tmp_path / 'gen.npy', '--save-stats', tmp_path / 's.npz')
    assert code == 0 and f'wrote {tmp_path / "s.npz"} (it replaced the file that was there)' in out

def test_a_checkpoint_of_another_network_is_one_line(setup, small_mnist, capsys):
    tmp_path, _ = setup
    save_model(tmp_path / 'c.pt', other_network(), epoch=1)
    np.save(tmp_path / 'gen.npy', small_mnist[2][:50].numpy())
    code, out, err = run_fid(tmp_path, capsys, tmp_path / 'gen.npy')
    assert code == 1 and err.count('\n') == 1 and 'Traceback' not in err
    assert f'{tmp_path / "c.pt"} was trained with another network than model.py builds now (layers.' in err
    assert 'python train.py trains the current one' in err

def test_an_edited_network_scores_with_its_own_features(setup, small_mnist, capsys, monkeypatch):
    # the wider network (16/32/64 channels): 256 features, the report card as with 128
    import model as model_py
    tmp_path, _ = setup
    wider = network('wider')[0].eval()
    monkeypatch.setattr(model_py, 'Classifier', lambda: network('wider')[0])
    save_model(tmp_path / 'c.pt', wider, epoch=1)
    np.save(tmp_path / 'gen.npy', small_mnist[2][:, 2:30, 2:30].numpy())
    code, out, err = run_fid(tmp_path, capsys, tmp_path / 'gen.npy')
    assert code == 0, err
    f_real = embed(wider, small_mnist[0][:, None])[0]
    f_gen = embed(wider, small_mnist[2][:, None])[0]
    assert f_real.shape == (600, 256)
    assert f'{frechet_distance(*mean_cov(f_gen), *mean_cov(f_real)):10.4f}' in out
    assert '| features post (256) |' in out and 'levels 16x16x16, 32x8x8, 64x2x2 | 256 features' in out

# -----------------------------------------------------------------------------
# generated digits: every shape generators write, PNG folders, and bad files

@pytest.mark.parametrize('shape', [(5, 28, 28), (5, 1, 28, 28), (5, 28, 28, 1), (5, 784),
                                   (5, 32, 32), (5, 1, 32, 32), (5, 32, 32, 1), (5, 1024)])
def test_accepted_shapes(shape):
    base = torch.rand(5, *((28, 28) if 784 in shape or 28 in shape else (32, 32)))
    y = fid.to_model_input(base.reshape(shape), 'x')
    assert y.shape == (5, 1, 32, 32) and y.dtype == torch.float32
    expected = pad(base) if base.shape[1] == 28 else base             # padded as mnist.py pads MNIST
    torch.testing.assert_close(y[:, 0], expected, rtol=0, atol=0)

def test_floats_a_rounding_error_outside_0_1_are_clipped():
    x = torch.rand(3, 28, 28)
    x[0, 5, 5], x[1, 6, 6] = 1 + 1e-7, -1e-8                          # float32 arithmetic in a generator
    y = fid.to_model_input(x, 'x')
    assert y.min() == 0 and y.max() == 1
    torch.testing.assert_close(y[:, 0, 2:30, 2:30], x.clamp(0, 1), rtol=0, atol=0)

def test_images_already_in_shape_are_not_copied_and_never_changed():
    x = torch.rand(4, 1, 32, 32)
    assert fid.to_model_input(x, 'x').data_ptr() == x.data_ptr()     # 400 MB saved at 100,000 images
    assert fid.to_model_input(x.numpy(), 'x').data_ptr() == x.data_ptr()
    # a copy where the values must change (clipping) or the layout differs; the input is kept
    x[0, 0, 3, 3] = 1 + 1e-7
    before = x.clone()
    y = fid.to_model_input(x, 'x')
    assert y.data_ptr() != x.data_ptr() and y.max() == 1 and torch.equal(x, before)
    x[0, 0, 3, 3] = 0.5
    t = x.transpose(2, 3)                                             # any memory layout
    torch.testing.assert_close(fid.to_model_input(t, 'x'), t, rtol=0, atol=0)
    assert fid.to_model_input(x.double(), 'x').dtype == torch.float32

def test_uint8_is_scaled():
    x = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28) % 256
    y = fid.to_model_input(x.astype(np.uint8), 'x')
    torch.testing.assert_close(y[:, 0, 2:30, 2:30], torch.from_numpy(x).float() / 255)

@pytest.mark.parametrize('x, message', [
    (np.zeros((5, 28, 27), np.float32), 'expected grayscale images of shape'),
    (np.zeros((5, 3, 32, 32), np.float32), 'expected grayscale images of shape'),
    (np.zeros((5, 28, 28, 3), np.float32), 'expected grayscale images of shape'),
    (np.zeros((28, 28), np.float32), 'expected grayscale images of shape'),
    (np.full((5, 28, 28), np.nan, np.float32), 'NaN or infinite'),
    (np.full((5, 28, 28), np.inf), 'NaN or infinite'),
    (np.where(np.arange(5 * 784).reshape(5, 28, 28) == 2000, np.nan, 0.5), '^samples.npy: 1 values are NaN'),   # one
    (np.where(np.eye(28)[None] * np.ones((5, 1, 1)) == 1, -np.inf, 0.5), ' 140 values are NaN or infinite'),
    (np.full((5, 28, 28), 255.0, np.float32), r'must lie in \[0, 1\].*divide uint8 values by 255'),
    (np.linspace(-1, 1, 5 * 784).reshape(5, 28, 28), r'map them with \(x \+ 1\) / 2'),
    (np.zeros((5, 28, 28), np.int64), 'got numpy dtype int64'),
    (torch.zeros(5, 28, 28, dtype=torch.int16), 'got torch.int16'),
    (np.zeros((1, 28, 28), np.float32), 'at least 2 images'),
    (np.full((5, 28, 28), 'a'), 'images of numbers'),                # strings
    (np.zeros((5, 28, 28), 'datetime64[s]'), 'images of numbers'),
    (np.zeros((5, 28, 28), [('a', 'f4')]), 'images of numbers'),     # a structured array
    (torch.zeros(5, 28, 28).to_sparse(), 'x.to_dense()'),
    (np.full((5, 28, 28), 0.5) + np.eye(28) * (0.5 + 2e-6), r'from 0.5 to 1.000002: divide'),   # not rounding
    (np.full((5, 28, 28), 0.5) - np.eye(28) * 0.6, r'from -0.1 to 0.5: divide'),  # not [-1, 1]-like
])
def test_bad_images_raise(x, message):
    with pytest.raises(ValueError, match=message) as e:
        fid.to_model_input(x, 'samples.npy')
    assert 'samples.npy' in str(e.value)

def write_pngs(folder, u8, mode='L'):
    """uint8 images (N, H, W) as PNG files of a PIL mode: L (gray), LA, RGB or RGBA (opaque)."""
    from PIL import Image  # Pillow comes with matplotlib
    folder.mkdir()
    for i, a in enumerate(u8):
        channels = {'L': [a], 'LA': [a, 255 + 0 * a], 'RGB': [a] * 3, 'RGBA': [a] * 3 + [255 + 0 * a]}[mode]
        Image.fromarray(np.stack(channels, -1).squeeze(-1) if mode == 'L' else np.stack(channels, -1), mode).save(folder / f'{i:03d}.png')
    return folder

@pytest.mark.parametrize('mode', ['L', 'LA', 'RGB', 'RGBA'])
def test_png_folder_reads_like_the_npy(tmp_path, mode):
    u8 = np.random.default_rng(0).integers(0, 256, (12, 28, 28), dtype=np.uint8)
    x = fid.read_png_folder(write_pngs(tmp_path / 'pngs', u8, mode))
    np.testing.assert_array_equal(x, u8 / np.float32(255))
    np.save(tmp_path / 'same.npy', u8)
    torch.testing.assert_close(fid.load_images(tmp_path / 'pngs'), fid.load_images(tmp_path / 'same.npy'), rtol=0, atol=0)

def test_npz_is_not_images(tmp_path):
    x = np.zeros((3, 28, 28), np.float32)
    np.savez(tmp_path / 'x.npz', x=x)
    with pytest.raises(ValueError, match=r'x.npz: expected a .npy or .pt file of images, or a folder of PNGs'):
        fid.load_images(tmp_path / 'x.npz')
    (tmp_path / 'x.npz').rename(tmp_path / 'archive.npy')            # an archive under an array's name
    with pytest.raises(ValueError, match=r'archive.npy: expected one array of images, got an archive of 1 arrays'):
        fid.load_images(tmp_path / 'archive.npy')

def test_bad_png_folders(tmp_path):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('no images here')
    with pytest.raises(ValueError, match='no .png images in this folder'):
        fid.read_png_folder(tmp_path / 'empty')
    from matplotlib.image import imsave
    mixed = write_pngs(tmp_path / 'mixed', np.zeros((2, 28, 28), np.uint8))
    imsave(mixed / '002.png', np.zeros((32, 32)), cmap='gray')
    with pytest.raises(ValueError, match='mixed sizes: 000.png is 28x28, 002.png is 32x32'):
        fid.read_png_folder(mixed)
    colour = tmp_path / 'colour'
    colour.mkdir()
    rgb = np.zeros((28, 28, 3), np.uint8)
    rgb[..., 0] = 200
    imsave(colour / 'a.png', rgb)
    with pytest.raises(ValueError, match='a.png: a colour image'):
        fid.read_png_folder(colour)
    clear = tmp_path / 'clear'
    clear.mkdir()
    imsave(clear / 'a.png', np.zeros((28, 28, 4), np.uint8))          # alpha 0: transparent
    with pytest.raises(ValueError, match='transparent'):
        fid.read_png_folder(clear)
    (clear / 'a.png').write_bytes(b'not a png')
    with pytest.raises(ValueError, match='a.png: not a readable PNG'):
        fid.read_png_folder(clear)

def test_bad_files(tmp_path):
    (tmp_path / 'empty.npy').write_bytes(b'')
    (tmp_path / 'cut.npy').write_bytes(open_npy_bytes()[:100])
    # a header that claims 100,000 x 28 x 10,000 float64 (224 GB) over a few bytes of data
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000, 28, 10000), }"
    header += ' ' * (117 - len(header)) + '\n'
    (tmp_path / 'huge.npy').write_bytes(b'\x93NUMPY\x01\x00' + len(header).to_bytes(2, 'little') + header.encode() + b'\0' * 64)
    (tmp_path / 'pickled.pt').write_bytes(b'not a torch file')
    for name in ('empty.npy', 'cut.npy', 'huge.npy'):
        with pytest.raises(ValueError, match='not a readable .npy array: empty, cut short') as e:
            fid.load_images(tmp_path / name)
        assert name in str(e.value)
    with pytest.raises(FileNotFoundError, match='no such file or folder'):
        fid.load_images(tmp_path / 'missing.npy')
    (tmp_path / 'x.txt').write_text('1 2 3')
    with pytest.raises(ValueError, match='expected a .npy or .pt file'):
        fid.load_images(tmp_path / 'x.txt')
    torch.save({'x': torch.zeros(3)}, tmp_path / 'd.pt')
    with pytest.raises(ValueError, match='expected one tensor of images, got dict'):
        fid.load_images(tmp_path / 'd.pt')
    with pytest.raises(ValueError, match='pickled.pt: not a readable .pt file') as e:
        fid.load_images(tmp_path / 'pickled.pt')
    assert '\n' not in str(e.value)

def open_npy_bytes():
    import io
    b = io.BytesIO()
    np.save(b, np.zeros((10, 28, 28), np.float32))
    return b.getvalue()
