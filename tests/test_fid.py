"""
Tests for fid.py: the Fréchet distance against closed forms and an independent computation,
KID against a double loop over all pairs, precision, recall, density and coverage against
brute force and point clouds with known answers, the digit metrics against closed forms,
copies on real digits, the report card and its cache, the readers of generated digits, and
the command.
"""

import math
import re
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fid
import model as model_py
from fid import (classifier_score, copies, copy_index, embed, frechet_distance,
                 kernel_inception_distance, kl_divergence, knn_radii2, manifold_metrics, mean_cov,
                 metrics, nearest_two, real_stats, recentre, to_model_input)
from model import classifier_id
from networks import network, save_model, use_network

ROOT = Path(__file__).resolve().parent.parent

# -----------------------------------------------------------------------------
# the Fréchet distance

def random_cov(d, rng, rank=None):
    A = rng.standard_normal((d, rank or d))
    return A @ A.T / d

def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(5), random_cov(5, rng)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0, abs=1e-9)
    # one dimension: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1)
    # diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = rng.uniform(0.1, 2, 4), rng.uniform(0.1, 2, 4)
    expected = ((mu[:4] - 1) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu[:4], np.diag(a), np.ones(4), np.diag(b)) == pytest.approx(expected)

def test_frechet_distance_against_the_symmetric_square_root():
    # tr(sqrt(s1 s2)) = tr(sqrt(r s2 r)) with r = sqrt(s1): a symmetric matrix's square root
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    s1, s2 = random_cov(6, rng), random_cov(6, rng)
    w, V = np.linalg.eigh(s1)
    r = (V * np.sqrt(w)) @ V.T
    tr = np.sqrt(np.linalg.eigvalsh(r @ s2 @ r).clip(0)).sum()
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-9)   # symmetric

def test_the_frechet_distance_of_a_set_with_itself_is_0_never_below():
    # rounding puts 2 tr(sigma) - 2 tr(sqrt(sigma sigma)) about 1e-13 either side of 0
    for seed in range(20):
        f = np.random.default_rng(seed).standard_normal((300, 16)).astype(np.float32) * 3 + 1
        mu, sigma = mean_cov(torch.from_numpy(f))
        assert 0 <= frechet_distance(mu, sigma, mu, sigma) < 1e-9, seed

def test_frechet_distance_of_singular_covariances_is_finite():
    rng = np.random.default_rng(2)
    s1, s2 = random_cov(8, rng, rank=3), random_cov(8, rng, rank=2)
    d = frechet_distance(np.zeros(8), s1, np.zeros(8), s2)
    assert np.isfinite(d) and d > 0
    assert frechet_distance(np.zeros(8), s1, np.zeros(8), s1) == pytest.approx(0, abs=1e-7)

def test_mean_cov_equals_numpy_also_with_a_large_mean():
    f = np.random.default_rng(3).standard_normal((500, 4)).astype(np.float32) + 1e4
    mu, sigma = mean_cov(torch.from_numpy(f))
    np.testing.assert_allclose(mu, f.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f.astype(np.float64), rowvar=False), rtol=1e-9,
                               atol=1e-9)

def test_embed_is_the_model_in_eval_mode_a_batch_at_a_time():
    model = network('blog').train()                   # dropout on: embed switches it off
    x = torch.rand(23, 1, 32, 32)
    f, probs = embed(model, x, features='after-relu', batch_size=5)   # 5 batches, the last of 3
    f_before, probs_before = embed(model, x, features='before-relu')
    with torch.no_grad():
        before, after = model.eval().features(x)
        logits = model(x)
    torch.testing.assert_close(f, after, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(f_before, before, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probs, logits.softmax(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probs_before, probs, rtol=1e-5, atol=1e-6)
    assert f.shape == (23, 128) and f.dtype == torch.float32
    with pytest.raises(KeyError):
        embed(model, x, features='after_relu')

# -----------------------------------------------------------------------------
# KID

def mmd2_unbiased(x, y):
    """Unbiased MMD^2 from fid.py's parts: within x, plus within y, minus twice across."""
    across = fid.polynomial_kernel(x, y).mean(dtype=torch.float64).item()
    return fid.within_mean(x) + fid.within_mean(y) - 2 * across

def test_mmd2_equals_a_double_loop_over_all_pairs():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 3, generator=g).double(), torch.randn(5, 3, generator=g).double() + 0.5
    k = lambda a, b: (a @ b / 3 + 1) ** 3
    kxx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    kyy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    kxy = sum(k(x[i], y[j]) for i in range(7) for j in range(5)) / (7 * 5)
    assert mmd2_unbiased(x, y) == pytest.approx((kxx + kyy - 2 * kxy).item(), rel=1e-10)

@pytest.mark.parametrize('n_gen, n_real, m', [(40, 90, 60), (40, 90, 30), (90, 40, 60)])
def test_kid_is_the_mean_mmd2_over_the_subsets_it_documents(n_gen, n_real, m):
    # brute force: the real rows of each subset from a generator seeded `seed`, the samples'
    # from one seeded `seed + 1` (every sample in every subset when there are m or fewer)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n_gen, 5, generator=g), torch.randn(n_real, 5, generator=g) * 1.2 + 0.2
    size, seed, subsets = min(m, n_gen, n_real), 7, 6
    g_real, g_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    real_rows = [torch.randperm(n_real, generator=g_real)[:size] for _ in range(subsets)]
    gen_rows = [torch.randperm(n_gen, generator=g_gen)[:size] if size < n_gen else torch.arange(n_gen)
                for _ in range(subsets)]
    values = [mmd2_unbiased(a[i].double(), b[j].double()) for i, j in zip(gen_rows, real_rows)]
    mean, std, size_used = kernel_inception_distance(a, b, subsets, m, seed=seed)
    assert size_used == size
    assert mean == pytest.approx(np.mean(values), rel=1e-6, abs=1e-9)
    assert std == pytest.approx(np.std(values), rel=1e-5, abs=1e-9)
    # the real side's means, computed once (as real_stats caches them), give the same
    known = fid.real_subset_means(b, m, subsets, seed)
    assert kernel_inception_distance(a, b, subsets, m, seed, known) == (mean, std, size_used)

def test_real_stats_caches_the_kid_real_means_kid_would_compute(monkeypatch):
    monkeypatch.setattr(fid, 'KID_SUBSET_SIZE', 50)
    monkeypatch.setattr(fid, 'KID_SUBSETS', 8)
    g = torch.Generator().manual_seed(0)
    f_real, f = torch.randn(300, 4, generator=g), torch.randn(80, 4, generator=g) + 0.1
    real = real_stats(f_real, torch.arange(300) % 10, seed=3)
    pool = f_real[real['subset']]
    np.testing.assert_array_equal(real['kid_real_means'], fid.real_subset_means(pool, 50, 8, 3))
    r = metrics(f, torch.full((80, 10), 0.1), real, seed=3)
    assert r['kid'] == pytest.approx(kernel_inception_distance(f, pool, 8, 50, seed=3)[0],
                                     rel=1e-12)

def test_kid_subsets_and_what_it_measures():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 16, generator=g), torch.randn(300, 16, generator=g)
    mean, std, m = kernel_inception_distance(a, b[:200], subsets=3, subset_size=1000)
    assert m == 200 and std == pytest.approx(0, abs=1e-12)     # every subset is the whole set
    assert mean == pytest.approx(mmd2_unbiased(a.double(), b[:200].double()))
    kid = lambda seed: kernel_inception_distance(a, b, 5, 100, seed=seed)
    assert kid(1) == kid(1) and kid(1) != kid(2)
    assert kernel_inception_distance(a, b, 5, 1000)[2] == 200  # at most the smaller set
    assert kernel_inception_distance(b, a, 5, 1000)[2] == 200  # whichever side it is
    assert abs(kernel_inception_distance(a, b, 20, 100)[0]) < 0.05             # one distribution
    assert kernel_inception_distance(a, b + 1, 20, 100)[0] > 0.5               # shifted

# -----------------------------------------------------------------------------
# precision, recall, density, coverage

def brute_force(gen, real, k_pr=3, k_dc=5):
    d_rr, d_gg, d_gr = torch.cdist(real, real), torch.cdist(gen, gen), torch.cdist(gen, real)
    r_real = d_rr.sort(1).values[:, k_pr]                               # [:, 0]: the point itself
    r_gen = d_gg.sort(1).values[:, k_pr]
    r_dc = d_rr.sort(1).values[:, k_dc]
    M, N = len(real), len(gen)
    precision = np.mean([any(d_gr[j, i] <= r_real[i] for i in range(M)) for j in range(N)])
    recall = np.mean([any(d_gr[j, i] <= r_gen[j] for j in range(N)) for i in range(M)])
    density = sum((d_gr[j] <= r_dc).sum().item() for j in range(len(gen))) / (k_dc * len(gen))
    coverage = np.mean([(d_gr[:, i] <= r_dc[i]).any().item() for i in range(len(real))])
    return precision, recall, density, coverage

def test_manifold_metrics_against_brute_force():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(60, 4, generator=g).double()
    gen = torch.randn(45, 4, generator=g).double() * 1.3 + 0.3
    expected = brute_force(gen, real)
    assert manifold_metrics(gen, real, block=7) == pytest.approx(expected, abs=1e-9)
    radii = knn_radii2(real, (3, 5), block=11).unbind(1)                # known radii, passed in
    assert manifold_metrics(gen, real, *radii) == pytest.approx(expected, abs=1e-9)
    assert knn_radii2(real, 3, block=7).tolist() == pytest.approx(
        (torch.cdist(real, real).sort(1).values[:, 3] ** 2).tolist())

def test_manifold_metrics_on_known_point_clouds():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(400, 2, generator=g)
    half = torch.cat([real[real[:, 0] > 0][:150], torch.randn(50, 2, generator=g) + 30])
    precision, recall, density, coverage = manifold_metrics(half, real)
    assert precision == pytest.approx(0.75) and 0.3 < recall < 0.6    # 50 far away; half the real
    assert 0.35 < coverage < 0.6 and 0.5 < density < 1.1

# -----------------------------------------------------------------------------
# the digits

def test_classifier_score_and_digit_mix_closed_forms():
    assert classifier_score(torch.eye(10).repeat(3, 1)) == pytest.approx(10)   # sure and varied
    assert classifier_score(F.one_hot(torch.full((30,), 4), 10).float()) == pytest.approx(1)
    assert classifier_score(torch.full((30, 10), 0.1)) == pytest.approx(1)      # never sure
    p = torch.tensor([0.5, 0.5] + [0.0] * 8)
    assert kl_divergence(p, torch.full((10,), 0.1)) == pytest.approx(math.log(5))
    assert kl_divergence(p, p) == 0

def test_classifier_score_takes_the_exponential_of_the_mean_kl():
    # half the samples sure of a 0, half unsure: p(y) = (0.55, 0.05, ..., 0.05)
    probs = torch.cat([F.one_hot(torch.zeros(5, dtype=torch.long), 10).float(),
                       torch.full((5, 10), 0.1)])
    kl_sure = math.log(1 / 0.55)
    kl_unsure = 0.1 * math.log(0.1 / 0.55) + 0.9 * math.log(0.1 / 0.05)
    assert classifier_score(probs) == pytest.approx(math.exp((kl_sure + kl_unsure) / 2))

def test_the_mean_confidence_is_the_most_likely_digits_probability():
    g = torch.Generator().manual_seed(0)
    f_real, p_real = digit_features(200, list(range(10)), g)
    f = torch.randn(60, 4, generator=g)
    probs = (torch.randn(60, 10, generator=g) * 2).softmax(1)           # unsure, uneven
    r = metrics(f, probs, real_stats(f_real, p_real.argmax(1)))
    top = probs.max(1)
    assert r['confidence'] == pytest.approx(top.values.double().mean().item(), rel=1e-12)
    for d in range(10):
        chosen = top.indices == d
        expected = top.values[chosen].double().mean().item() if chosen.any() else math.nan
        assert r['digits'][d]['confidence'] == pytest.approx(expected, rel=1e-12, nan_ok=True)

def digit_features(n, digits, g):
    """Features (n, 4) clustered by digit, and their one-hot probabilities."""
    pred = torch.tensor(digits)[torch.randint(0, len(digits), (n,), generator=g)]
    return torch.randn(n, 4, generator=g) * 0.3 + pred[:, None].float(), F.one_hot(pred, 10).float()

def test_metrics_against_direct_counts():
    g = torch.Generator().manual_seed(0)
    f_real, p_real = digit_features(400, list(range(10)), g)
    f, probs = digit_features(300, [1, 2, 3, 7, 8], g)
    real = real_stats(f_real, p_real.argmax(1))
    r = metrics(f, probs, real)
    pred = probs.argmax(1)
    for d in range(10):
        assert r['digits'][d]['n'] == (pred == d).sum()
        assert r['digits'][d]['share'] == pytest.approx((pred == d).double().mean().item())
        real_share = (p_real.argmax(1) == d).double().mean().item()
        assert r['digits'][d]['real_share'] == pytest.approx(real_share)
    assert r['digits_present'] == 5 and math.isnan(r['digits'][0]['kid'])
    assert not math.isnan(r['digits'][1]['kid'])
    assert r['fid'] == pytest.approx(frechet_distance(*mean_cov(f), *mean_cov(f_real)))
    assert r['kid'] == kernel_inception_distance(f, f_real[real['subset']])[0]   # all 400 rows
    four = (r['precision'], r['recall'], r['density'], r['coverage'])
    assert four == pytest.approx(manifold_metrics(f, f_real))
    shares, real_shares = fid.digit_shares(pred), fid.digit_shares(p_real.argmax(1))
    assert r['digit_kl'] == pytest.approx(kl_divergence(shares, real_shares))
    assert r['classifier_score'] == pytest.approx(classifier_score(probs))
    assert r['warnings'] == ['KID on subsets of 300, not 1000: noisier']
    stray = probs.clone()
    stray[0] = F.one_hot(torch.tensor(9), 10)                         # 1 of 300 a 9: under 1%
    assert metrics(f, stray, real)['digits_present'] == 5
    tiny = metrics(f[:3], probs[:3], real)                            # fewer than k + 1 images
    assert math.isnan(tiny['precision']) and len(tiny['warnings']) == 3

def test_precision_and_recall_use_a_seeded_random_subset_of_at_most_set_n(monkeypatch):
    # the first 100 of 400 samples lie far away: a random 100 of them has about 3/4 good ones
    monkeypatch.setattr(fid, 'SET_N', 100)
    g = torch.Generator().manual_seed(0)
    f_real = torch.randn(300, 8, generator=g)
    f = torch.cat([torch.randn(100, 8, generator=g) + 100,
                   f_real[torch.randint(0, 300, (300,), generator=g)]])
    r = metrics(f, torch.full((400, 10), 0.1), real_stats(f_real, torch.arange(300) % 10))
    assert (r['pr_n'], r['pr_n_real']) == (100, 100) and 0.6 < r['precision'] < 0.9

def test_every_random_subset_of_the_metrics_follows_the_seed(monkeypatch):
    monkeypatch.setattr(fid, 'SET_N', 100)      # fewer rows than the sets: subsets matter
    g = torch.Generator().manual_seed(0)
    pred_real, pred = torch.arange(300) % 10, torch.arange(400) % 10
    f_real = torch.randn(300, 4, generator=g) + pred_real[:, None]
    f = torch.randn(400, 4, generator=g) * 1.5 + pred[:, None]
    probs = F.one_hot(pred, 10).float()
    # the real side: the seed picks the subset, whose k-NN radii are those of brute force
    reals = {s: fid.real_stats(f_real, pred_real, seed=s) for s in (1, 2)}
    assert torch.equal(reals[1]['subset'], fid.real_stats(f_real, pred_real, seed=1)['subset'])
    assert not torch.equal(reals[1]['subset'], reals[2]['subset'])
    sub = f_real[reals[2]['subset']]
    expected = torch.cdist(sub.double(), sub.double()).sort(1).values[:, 3] ** 2
    torch.testing.assert_close(reals[2]['radii2_precision'].double(), expected, rtol=1e-4, atol=1e-5)
    # the generated side, with one real side: precision & co. and each digit's KID
    real = reals[1]
    r = {s: fid.metrics(f, probs, real, seed=s) for s in (1, 2)}
    four = lambda r: (r['precision'], r['recall'], r['density'], r['coverage'])
    assert four(r[1]) == four(fid.metrics(f, probs, real, seed=1))
    assert four(r[1]) != four(r[2])
    for s in (1, 2):
        for d in (0, 7):
            expected = fid.kernel_inception_distance(f[pred == d], f_real[pred_real == d],
                                                     fid.KID_DIGIT_SUBSETS, seed=s)[0]
            assert r[s]['digits'][d]['kid'] == pytest.approx(expected, rel=1e-12)

# -----------------------------------------------------------------------------
# copies of the training set, on real digits

def test_recentre_undoes_whole_pixel_shifts(mnist_data):
    x = mnist_data[2][:200]
    centred = recentre(x)
    for shift in ((1, 0), (0, -1), (2, 2), (-3, 1)):
        assert torch.equal(recentre(x.roll(shift, dims=(1, 2))), centred)
    r, mass = torch.arange(32.0), centred.sum((1, 2))
    cy, cx = (centred.sum(2) * r).sum(1) / mass, (centred.sum(1) * r).sum(1) / mass
    assert (cy - 16).abs().max() <= 0.5 and (cx - 16).abs().max() <= 0.5
    assert torch.equal(recentre(torch.zeros(2, 32, 32)), torch.zeros(2, 32, 32))   # blank: no NaN

def test_nearest_two_against_brute_force(monkeypatch):
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (50, 1, 32, 32), generator=g) / 255
    train *= torch.rand(50, 1, 32, 32, generator=g) > 0.8            # sparse strokes
    x = torch.rand(30, 1, 32, 32, generator=g) * 0.5
    x[:5] = train[[7, 3, 3, 40, 0]]                                   # five exact copies
    monkeypatch.setattr(fid, 'COPY_CANDIDATES', 50)                   # every training digit
    index = copy_index(train, train[:10])
    ratio, d1, j = nearest_two(x, index, block=7)                     # blocks of 7, ..., 7, 2
    flat = lambda images: recentre(images[:, 0]).flatten(1).double()
    d = torch.cdist(flat(x), flat(train))                            # (30, 50)
    top2 = d.topk(2, 1, largest=False)
    torch.testing.assert_close(d1.double(), top2.values[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ratio.double(), top2.values[:, 0] / top2.values[:, 1], rtol=1e-5,
                               atol=1e-5)
    assert torch.equal(j, top2.indices[:, 0]) and (ratio[:5] == 0).all()
    monkeypatch.setattr(fid, 'COPY_CANDIDATES', 8)                    # the default finds them too
    assert nearest_two(x, index)[2][:5].tolist() == [7, 3, 3, 40, 0]

@pytest.fixture(scope='module')
def memorisers(mnist_data):
    """The copy index of 5,000 training digits calibrated on 1,000 test digits, 1,000 of the
    training digits to copy, and 2,000 other test digits: new digits."""
    x_train, _, x_val, _ = mnist_data
    index = copy_index(x_train[:5000, None], x_val[:1000, None])
    copied = x_train[torch.randperm(5000, generator=torch.Generator().manual_seed(0))[:1000], None]
    return index, copied, x_val[1000:3000, None]

def test_tau_is_the_share_of_the_calibration_digits(memorisers, mnist_data):
    index = memorisers[0]
    ratio = nearest_two(mnist_data[2][:1000, None], index)[0]
    assert int((ratio <= index['threshold']).sum()) == math.ceil(fid.COPY_RATE * 1000)   # 10 of 1,000
    assert index['train'].dtype == torch.uint8
    assert torch.equal(index['train'].float() / 255, recentre(mnist_data[0][:5000]).flatten(1))

def test_copies_of_every_kind_are_found_and_new_digits_are_not(memorisers):
    index, copied, new = memorisers
    rate = lambda x: copies(x, index)[0]
    assert rate(copied) >= 0.95 and 0.45 <= rate(torch.cat([copied[:500], new[:500]])) <= 0.55
    for shift in ((0, 1), (1, 0), (-1, 1), (2, -2)):                  # moved by 1 and 2 pixels
        assert rate(copied.roll(shift, dims=(2, 3))) >= 0.9, shift
    g = torch.Generator().manual_seed(0)
    assert rate((copied + 0.05 * torch.randn(copied.shape, generator=g)).clamp(0, 1)) >= 0.85
    assert rate(new) <= 0.02                                          # about COPY_RATE
    assert rate(F.avg_pool2d(new, 3, stride=1, padding=1)) <= 0.005   # blurred new digits
    assert rate(torch.rand(300, 1, 32, 32, generator=g)) == 0
    assert rate(torch.zeros(10, 1, 32, 32)) == 0                      # blank images


def sparse_digits(n, g):
    """n (n, 1, 32, 32) images of sparse strokes in the central 20x20 (blank margins, as MNIST's
    padded digits), pixels multiples of 1/255."""
    x = torch.zeros(n, 1, 32, 32)
    strokes = torch.randint(0, 256, (n, 1, 20, 20), generator=g) / 255
    x[..., 6:26, 6:26] = strokes * (torch.rand(n, 1, 20, 20, generator=g) > 0.8)
    return x

@pytest.fixture(scope='module')
def small_index():
    g = torch.Generator().manual_seed(0)
    train, calibration = sparse_digits(300, g), sparse_digits(200, g)
    return fid.copy_index(train, calibration), train, calibration

def test_the_calibration_digits_score_exactly_the_copy_rate(small_index):
    index, _, calibration = small_index
    rate = fid.copies(calibration, index)[0]
    assert rate == math.ceil(fid.COPY_RATE * 200) / 200           # 2 of 200, by construction


def test_plot_copies_draws_each_sample_beside_its_training_digit(small_index, monkeypatch,
                                                                  tmp_path):
    index, train, calibration = small_index
    x = torch.cat([train[[5, 9]].roll(1, dims=3), calibration[:6]])   # 2 moved copies, 6 new
    rate, per_sample = fid.copies(x, index)
    r = {'per_sample': per_sample, 'copies': rate, 'copy_threshold': index['threshold'].item()}
    drawn = {}
    monkeypatch.setattr(fid, 'plot_tiles', lambda tiles, path, title, **k: drawn.update(t=tiles))
    fid.plot_copies(x, r, index, tmp_path / 'c.png', n=4, per_row=2)
    tiles = drawn['t']                                            # (2, 4, 32, 32): sample, train
    assert tiles.shape == (2, 4, 32, 32) and np.nanmax(tiles) <= 1 and np.nanmin(tiles) >= 0
    centred = fid.recentre(train[[5, 9], 0])                      # the copies first (ratio 0)
    drawn_pairs = {tuple(np.round(tiles[0, c] * 255).astype(int).ravel()) for c in (0, 2)}
    assert drawn_pairs == {tuple((c * 255).round().int().flatten().tolist()) for c in centred}
    for c in (0, 2):                                              # the copy beside its original
        np.testing.assert_allclose(tiles[0, c], tiles[0, c + 1], atol=1e-6)

# -----------------------------------------------------------------------------
# the readers of generated digits

@pytest.mark.parametrize('shape', [(6, 28, 28), (6, 1, 28, 28), (6, 28, 28, 1), (6, 784)])
def test_every_layout_of_28x28_digits_gives_the_padded_images(shape):
    x = torch.rand(6, 28, 28)
    assert torch.equal(to_model_input(x.reshape(shape)), F.pad(x, (2, 2, 2, 2))[:, None])

def test_read_only_memory_mapped_and_strided_inputs_are_taken_quietly(tmp_path):
    x = np.random.default_rng(0).random((6, 28, 28), dtype=np.float32)
    np.save(tmp_path / 'x.npy', x)
    read_only = x.copy()
    read_only.setflags(write=False)
    strided = torch.from_numpy(x.copy()).transpose(1, 2).contiguous().transpose(1, 2)
    expected = to_model_input(x.copy())
    with warnings.catch_warnings():
        warnings.simplefilter('error')                 # PyTorch's "not writable" would raise
        for a in (read_only, np.load(tmp_path / 'x.npy', mmap_mode='r'),
                  np.frombuffer(x.tobytes(), np.float32).reshape(6, 28, 28), strided):
            assert torch.equal(to_model_input(a), expected)

def test_images_in_shape_are_used_as_they_are_and_uint8_is_scaled():
    x = torch.rand(4, 1, 32, 32)
    assert to_model_input(x).data_ptr() == x.data_ptr()             # not copied, not changed
    u = torch.randint(0, 256, (4, 32, 32), dtype=torch.uint8)
    assert torch.equal(to_model_input(u.numpy()), u[:, None].float() / 255)
    y = x.double()
    y[0, 0, 0, 0], y[1, 0, 0, 0] = -1e-7, 1 + 1e-7                   # a generator's rounding
    assert to_model_input(y).min() == 0 and to_model_input(y).max() == 1

@pytest.mark.parametrize('x, message', [   # the error's last words
    (np.zeros((5, 30, 30)), 'got shape (5, 30, 30)'),
    (np.zeros((1, 28, 28)), 'got shape (1, 28, 28)'),
    (np.zeros((5, 28, 28, 3)), 'got shape (5, 28, 28, 3)'),
    (np.full((5, 28, 28), 255, np.int64),
     'expected float images in [0, 1] or uint8 0-255, got torch.int64'),
    (np.linspace(-1, 1, 5 * 784).reshape(5, 28, 28),
     'found values from -1 to 1: they look like [-1, 1], map them with (x + 1) / 2'),
    (np.linspace(0, 255, 5 * 784).reshape(5, 28, 28), 'found values from 0 to 255'),
    (np.full((5, 28, 28), np.nan), 'found values from nan to nan'),
])
def test_digits_the_scorer_does_not_take_are_one_value_error(x, message):
    with pytest.raises(ValueError) as e:
        to_model_input(x, 'samples')
    assert str(e.value).startswith('samples: ') and str(e.value).endswith(message)

def gray_png(path, a):
    """An 8-bit grayscale PNG of a (H, W) uint8, written by hand: signature, IHDR, IDAT, IEND."""
    chunk = lambda kind, data: (struct.pack('>I', len(data)) + kind + data
                                + struct.pack('>I', zlib.crc32(kind + data)))
    rows = b''.join(b'\0' + row.tobytes() for row in a)              # filter 0 before each row
    header = struct.pack('>IIBBBBB', *a.shape[::-1], 8, 0, 0, 0, 0)  # width, height, 8-bit gray
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header)
                     + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))

def test_png_folders_npy_and_pt_read_alike(tmp_path):
    from matplotlib.image import imsave
    x = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    for folder in ('gray', 'rgb'):
        (tmp_path / folder).mkdir()
        for i in (2, 0, 1):                           # read in name order, as pytorch-fid does
            a = x[i].numpy()
            if folder == 'gray':
                gray_png(tmp_path / folder / f'{i:03d}.png', a)
            else:                                     # gray saved as colour: RGBA
                imsave(tmp_path / folder / f'{i:03d}.png', np.stack([a] * 3, -1))
    np.save(tmp_path / 'x.npy', x.numpy())
    torch.save(x, tmp_path / 'x.pt')
    expected = to_model_input(x)
    for path in ('gray', 'rgb', 'x.npy', 'x.pt'):
        assert torch.equal(fid.load_images(tmp_path / path), expected), path
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='empty: a folder without .png images'):
        fid.load_images(tmp_path / 'empty')
    with pytest.raises(ValueError, match='x.txt: expected a .npy or .pt file, or a folder of PNG'):
        fid.load_images(tmp_path / 'x.txt')

# -----------------------------------------------------------------------------
# the report card, its cache and the command, on 600 training and 300 test digits

@pytest.fixture
def setup(tmp_path, monkeypatch, mnist_data):
    """A random classifier's checkpoint in tmp_path/c.pt; fid.py's MNIST is 600 training and
    300 test digits."""
    small = mnist_data[0][:600], mnist_data[1][:600], mnist_data[2][:300], mnist_data[3][:300]
    monkeypatch.setattr(fid, 'load_mnist', lambda data_dir: small)
    torch.manual_seed(0)
    save_model(tmp_path / 'c.pt', model_py.Classifier())
    model, _ = model_py.load_classifier(tmp_path / 'c.pt')     # as the command loads it
    return tmp_path, model, small

def run(tmp_path, *args):
    fid.main([*map(str, args), '--checkpoint', str(tmp_path / 'c.pt'),
              '--out-dir', str(tmp_path / 'out'), '--device', 'cpu'])

def test_the_report_card(setup, capsys):
    tmp_path, model, (x_train, _, x_val, y_val) = setup
    np.save(tmp_path / 'gen.npy', x_val[:200, 2:30, 2:30].numpy())   # 28x28, as generators write
    run(tmp_path, tmp_path / 'gen.npy', '--seed', 3, '--save-stats', tmp_path / 's' / 'gen.npz')
    out, err = capsys.readouterr()
    f, probs = embed(model, x_val[:200, None])
    f_train, p_train = embed(model, x_train[:, None])
    r = metrics(f, probs, real_stats(f_train, p_train.argmax(1), seed=3), seed=3)
    assert f'  FID               {r["fid"]:10.4f}   distance between the feature Gaussians' in out
    assert f'  KID               {r["kid"]:10.4g}   +- {r["kid_std"]:.4g} over 100 subsets of 200' \
        in out
    for key in ('precision', 'recall', 'density', 'coverage'):
        assert f'  {key:18s}{r[key]:10.3f}   ' in out
    assert f'  digits present    {r["digits_present"]:7d}/10' in out
    accuracy = (embed(model, x_val[:, None])[1].argmax(1) == y_val).double().mean().item()
    assert (f'yardstick: classifier {classifier_id(model)} (not the shared yardstick '
            f'{model_py.SHARED_ID}: compare only with its own numbers; test accuracy '
            f'{accuracy:.2%}) | features after-relu ({f.shape[1]}) | N 200 vs 600 (KID subsets '
            f'of 200 against 600; precision/recall 200 vs 600, k = 3; density/coverage k = 5)') in out
    assert (f'warning: classifier {classifier_id(model)} classifies only {accuracy:.1%} of the '
            f'test digits right: a barely trained yardstick, whose numbers say little') in err
    lines = out.splitlines()                          # the card's last line: where the time went
    last = lines[next(i for i, line in enumerate(lines) if line.startswith('yardstick')) + 1]
    parts = r'features|FID|KID|precision & co\.|digits|copies'
    assert re.fullmatch(rf'scored in (\d+\.\d\d) s on cpu: ((?:{parts}) \d+\.\d\d \| ){{5}}copies '
                        r'\d+\.\d\d', last), last
    total, seconds = float(last.split()[2]), [float(x) for x in re.findall(r' (\d+\.\d\d)', last)[1:]]
    assert abs(total - sum(seconds)) <= 0.03 and len(set(re.findall(parts, last))) == 6
    assert (tmp_path / 'out' / 'gen_copies.png').read_bytes()[:4] == b'\x89PNG'
    with np.load(tmp_path / 's' / 'gen.npz') as z:
        np.testing.assert_array_equal(z['mu'], r['mu'])
        np.testing.assert_array_equal(z['sigma'], r['sigma'])
        assert (z['classifier'], z['features'], z['n']) == (classifier_id(model), 'after-relu', 200)

def test_score_equals_the_command_and_sees_copies(setup, monkeypatch, capsys):
    tmp_path, model, (x_train, _, _, _) = setup
    x = x_train[:200].numpy()                         # 200 training digits, copied
    np.save(tmp_path / 'gen.npy', x)
    printed = {}
    monkeypatch.setattr(fid, 'print_report', lambda r, name: printed.update(r))
    run(tmp_path, tmp_path / 'gen.npy', '--features', 'before-relu')
    r = fid.score(x, checkpoint=tmp_path / 'c.pt', features='before-relu', out_dir=tmp_path / 'out',
                  device='cpu')
    for key in ('fid', 'kid', 'precision', 'recall', 'density', 'coverage', 'copies',
                'classifier_score', 'digit_kl', 'classifier', 'features', 'n'):
        assert r[key] == printed[key], key
    assert r['features'] == 'before-relu' and r['copies'] == 1.0
    assert torch.equal(r['per_sample']['nearest_train'], torch.arange(200))   # its original
    f_pre = embed(model, torch.from_numpy(x)[:, None], features='before-relu')[0]
    f_train = embed(model, x_train[:, None], features='before-relu')[0]
    assert r['fid'] == pytest.approx(frechet_distance(*mean_cov(f_pre), *mean_cov(f_train)))

def test_score_takes_a_memory_mapped_array_like_a_copy(setup):
    tmp_path, model, (_, _, x_val, _) = setup
    np.save(tmp_path / 'gen.npy', x_val[:100].numpy())
    kw = dict(checkpoint=tmp_path / 'c.pt', out_dir=tmp_path / 'out', device='cpu')
    copy = fid.score(np.load(tmp_path / 'gen.npy'), **kw)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        mapped = fid.score(np.load(tmp_path / 'gen.npy', mmap_mode='r'), **kw)
    for key in ('fid', 'kid', 'precision', 'recall', 'density', 'coverage', 'copies',
                'classifier_score', 'confidence'):
        assert mapped[key] == copy[key], key

def test_the_yardstick_line_says_whether_it_is_the_shared_classifier():
    shared = fid.yardstick(model_py.SHARED_ID, 0.9903, 'after-relu', 128)
    assert shared == (f'yardstick: classifier {model_py.SHARED_ID} (the shared yardstick; test '
                      f'accuracy 99.03%) | features after-relu (128)')
    assert 'not the shared yardstick' in fid.yardstick('0123456789ab', 0.9903, 'after-relu', 128)

def test_the_training_stats_is_cached_per_classifier_and_features(setup, monkeypatch, capsys):
    tmp_path, model, _ = setup
    out = tmp_path / 'out'
    embedded = []
    real_embed = fid.embed
    monkeypatch.setattr(fid, 'embed', lambda *a, **k: (embedded.append(1), real_embed(*a, **k))[1])
    a = fid.training_stats(model, out_dir=out)        # embeds the training and the test digits
    b = fid.training_stats(model, out_dir=out)         # from the cache: the same numbers
    assert len(embedded) == 2 and a.keys() == b.keys() and a['copy'].keys() == b['copy'].keys()
    for k in a:
        assert k == 'copy' or np.array_equal(np.asarray(a[k]), np.asarray(b[k])), k
    assert all(torch.equal(a['copy'][k], b['copy'][k]) for k in a['copy'])
    fid.training_stats(model, features='before-relu', out_dir=out)    # its own file
    other = network('blog', seed=1)
    c = fid.training_stats(other, out_dir=out)                        # another classifier: anew
    assert len(embedded) == 6 and not torch.equal(c['f'], a['f'])
    fid.training_stats(other, seed=1, out_dir=out)                    # another seed: anew
    assert len(embedded) == 8
    assert sorted(p.name for p in out.iterdir()) == [
        'train_copy_index.npz', 'train_stats_after-relu.npz', 'train_stats_before-relu.npz']
    assert capsys.readouterr().err.count('wrote') == 5                 # the copy index once

def test_the_table_of_known_failures(setup, capsys, monkeypatch):
    tmp_path, model, _ = setup
    monkeypatch.setattr(fid, 'KID_SUBSETS', 10)
    run(tmp_path)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith('| ')]
    assert rows[0].startswith('| compared (after-relu features) | N | FID | final part |')
    cells = {row.split(' | ')[0][2:]: row.split(' | ') for row in rows[1:]}
    n, _, final = cells['validation set vs train'][1:4]
    assert (n, final) == ('300', '0.30')
    assert cells['validation digits 0-4 only'][1] == str((setup[2][3] < 5).sum().item())
    assert cells['training digits, copied'][-4] == '100.0%'            # copies sees the copier

def test_an_edited_network_scores_with_its_own_features(tmp_path, monkeypatch, mnist_data, capsys):
    model = use_network(monkeypatch, 'wider').eval()
    save_model(tmp_path / 'c.pt', model)
    small = mnist_data[0][:300], mnist_data[1][:300], mnist_data[2][:100], mnist_data[3][:100]
    monkeypatch.setattr(fid, 'load_mnist', lambda data_dir: small)
    np.save(tmp_path / 'gen.npy', small[2].numpy())
    run(tmp_path, tmp_path / 'gen.npy')
    out = capsys.readouterr().out
    assert 'levels 16x16x16, 32x8x8, 64x2x2 | 256 features' in out
    assert 'features after-relu (256)' in out

def test_bad_input_is_one_line_from_the_command(tmp_path):
    x = np.linspace(-1, 1, 4 * 784).reshape(4, 28, 28)
    np.save(tmp_path / 'gen.npy', x)
    save_model(tmp_path / 'c.pt', model_py.Classifier())
    r = subprocess.run([sys.executable, 'fid.py', str(tmp_path / 'gen.npy'), '--checkpoint',
                        str(tmp_path / 'c.pt'), '--out-dir', str(tmp_path / 'out')],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr == (
        f'error: {tmp_path / "gen.npy"}: float images must lie in [0, 1], found values from -1 '
        f'to 1: they look like [-1, 1], map them with (x + 1) / 2\n')

def test_save_stats_is_never_the_input(capsys):
    for argv in (['gen.npy', '--save-stats', 'gen.npy'], ['--save-stats', 'gen.npz']):
        with pytest.raises(SystemExit) as e:
            fid.main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert 'error: --save-stats needs images, and a file name ending in .npz' in err

def test_the_failure_table_rows_are_the_failures_they_name():
    g = torch.Generator().manual_seed(0)
    x_train, x_val = sparse_digits(60, g), sparse_digits(20, g)
    y_val = torch.arange(20) % 10
    seen = {}
    def report(model, x, *args):
        seen[len(seen)] = x
        return dict(n=len(x), fid=0.0, kid=0.0, precision=0.0, recall=0.0, density=0.0,
                    coverage=0.0, copies=0.0, classifier_score=0.0, digits_present=0,
                    digit_kl=0.0)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(fid, 'report', report)
        fid.failure_table(None, None, x_train, x_val, y_val, True, 1000, 0)
    (val, low, blurred, _, _, noise, copied, moved, half) = seen.values()
    assert torch.equal(val, x_val) and torch.equal(low, x_val[y_val < 5])
    box = F.conv2d(x_val, torch.full((1, 1, 3, 3), 1 / 9), padding=1)
    torch.testing.assert_close(blurred, box)
    flat = lambda a: a.flatten(1)
    assert (flat(copied)[:, None] == flat(x_train)[None]).all(2).any(1).all()   # training digits
    assert torch.equal(moved[..., 1:], copied[..., :-1])          # moved right by one pixel
    assert not torch.equal(moved, copied)
    assert torch.equal(half, torch.cat([copied[:10], x_val[10:]]))
    assert (noise[..., :2, :] == 0).all() and noise[..., 2:30, 2:30].std() > 0.1   # padded noise

def test_the_command_writes_its_caches_into_out_dir_only(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    small = (sparse_digits(200, g)[:, 0], torch.arange(200) % 10,
             sparse_digits(100, g)[:, 0], torch.arange(100) % 10)
    monkeypatch.setattr(fid, 'load_mnist', lambda data_dir: small)
    monkeypatch.setattr(fid, 'KID_SUBSETS', 5)
    torch.manual_seed(0)
    save_model(tmp_path / 'c.pt', model_py.Classifier().eval())
    np.save(tmp_path / 'gen.npy', small[2][:50].numpy())
    (tmp_path / 'cwd').mkdir()
    monkeypatch.chdir(tmp_path / 'cwd')                 # where a stray relative write would land
    fid.main([str(tmp_path / 'gen.npy'), '--checkpoint', str(tmp_path / 'c.pt'),
              '--out-dir', str(tmp_path / 'o'), '--device', 'cpu'])
    assert sorted(p.name for p in (tmp_path / 'o').iterdir()) == [
        'gen_copies.png', 'train_copy_index.npz', 'train_stats_after-relu.npz']
    assert list((tmp_path / 'cwd').iterdir()) == []
