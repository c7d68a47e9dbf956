"""
The Fréchet distance ("FID") with which the later parts of the blog's series score generated
digits, with our MNIST classifier in place of the Inception network (the ImageNet classifier
the original FID uses); then a report card that says *what kind* of failure a set of samples
has (missing digits, blur, noise, copies). The FID, from the three functions below:

    model, _ = load_classifier()            # the shared classifier (or yours: see model.py)
    f, _ = embed(model, x)                  # (N, 128) features of images x (N, 1, 32, 32)
    f_train, _ = embed(model, load_mnist()[0][:, None])   # (60000, 128) the training digits
    fid = frechet_distance(*mean_cov(f), *mean_cov(f_train))

    python fid.py                 # the table of known failures: what each metric sees
    python fid.py samples.npy     # the report card of generated digits (or a folder of PNGs)
    from fid import score         # the same card in one call: score(samples)
"""

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mnist import check_writable, load_mnist, plot_tiles, run_script, write_atomic
from model import SHARED_ID, classifier_id, default_checkpoint, get_device, load_classifier, summary

# -----------------------------------------------------------------------------
# the FID the post prepares (it shows no code for it): features, mean and covariance, distance

@torch.no_grad()
def embed(model, x, features='after-relu', batch_size=1000):
    """Features (N, D) and digit probabilities (N, 10) of images x (N, 1, 32, 32), float32 on the
    model's device, in eval mode. The post plots the features before the last ReLU, which are
    closer to normal. We score those after it by default, though they are far from normal: only
    then are our FIDs on the scale of the series' later parts. `python fid.py` gives 0.28 for
    the test digits, where they report 0.30; `python fid.py --features before-relu` gives 11.42."""
    model.eval()                                                      # no dropout
    device = next(model.parameters()).device
    f, probs = [], []
    for xb in x.split(batch_size):
        before, after = model.features(xb.to(device))                 # (B, D) each
        f.append({'before-relu': before, 'after-relu': after}[features])
        probs.append(model.head(after).softmax(1))                    # (B, 10)
    return torch.cat(f).float(), torch.cat(probs).float()             # (N, D), (N, 10)

def mean_cov(f):
    """Mean (D,) and unbiased covariance (D, D) of features f (N, D), float64 numpy, as np.cov."""
    f = torch.as_tensor(f).double()
    mu = f.mean(0)                                                    # (D,)
    c = f - mu                                                        # (N, D) centred
    return mu.cpu().numpy(), (c.T @ c / (len(f) - 1)).cpu().numpy()   # (D,), (D, D)

def frechet_distance(mu1, sigma1, mu2, sigma2):
    """The Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, 1706.08500):
    d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrt(sigma1 sigma2)). Biased upwards
    for small sets, roughly like 1/N: compare at one N (test digits: about 0.3 at N = 10,000)."""
    mu1, sigma1, mu2, sigma2 = (torch.as_tensor(a).double() for a in (mu1, sigma1, mu2, sigma2))
    # tr(sqrt(sigma1 sigma2)), the value scipy's trace(sqrtm(sigma1 @ sigma2)) gives, is the sum of
    # the square roots of the eigenvalues of sigma1 sigma2. They are those of sqrt(sigma1) sigma2
    # sqrt(sigma1), a covariance too, so real and >= 0; .real drops rounding's tiny imaginary parts
    tr_sqrt = torch.linalg.eigvals(sigma1 @ sigma2).sqrt().real.sum()
    fd = ((mu1 - mu2) ** 2).sum() + sigma1.trace() + sigma2.trace() - 2 * tr_sqrt
    return max(fd.item(), 0.0)  # the true value is >= 0; clip the rounding below it

# -----------------------------------------------------------------------------
# beyond the blog: the report card's other metrics, each with its paper and formula (on the
# features as the FID, but copies on the pixels, the digits on the probabilities). First KID

KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000   # Bińkowski et al.'s defaults
KID_DIGIT_SUBSETS = 10                     # fewer per digit: ten KIDs must stay fast

def polynomial_kernel(a, b):
    """k(a, b) = (a.b / d + 1)^3 for every row of a (m, d) with every row of b (n, d): (m, n)."""
    return (a @ b.T).div_(a.shape[1]).add_(1).pow_(3)

def within_mean(x):
    """The mean of k(x_i, x_j) over the pairs i != j of the rows of x (m, d), summed in float64."""
    k = polynomial_kernel(x, x)                                       # (m, m)
    off_diagonal = k.sum(dtype=torch.float64) - k.diagonal().sum(dtype=torch.float64)
    return off_diagonal.item() / (len(x) * (len(x) - 1))

def kid_subsets(n, m, subsets, seed):
    """(subsets, m): for each subset, m of n row indices, drawn by a generator seeded seed."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=g)[:m] for _ in range(subsets)])

def real_subset_means(f_real, m, subsets=KID_SUBSETS, seed=0):
    """within_mean() of each real subset of kernel_inception_distance: (subsets,) float64."""
    return np.array([within_mean(f_real[i]) for i in kid_subsets(len(f_real), m, subsets, seed)])

def kernel_inception_distance(f_gen, f_real, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE,
                              seed=0, real_means=None):
    """KID (Bińkowski et al. 2018, arXiv:1801.01401) of features f_gen (N, D) against f_real
    (M, D): (mean, standard deviation, m) of the unbiased MMD^2 (the mean kernel within the
    samples, plus within the real rows, minus twice across) over `subsets` random subsets of
    m = min(subset_size, N, M) rows a side: 0 for one distribution at any N (so sometimes below).
    The real subsets are kid_subsets(M, m, subsets, seed), the same for any samples, so their
    within means can be computed once (real_means, m = subset_size); the samples' use seed + 1."""
    m = min(subset_size, len(f_gen), len(f_real))
    real_idx = kid_subsets(len(f_real), m, subsets, seed).to(f_real.device)   # (S, m)
    if real_means is None or m != subset_size:
        real_means = real_subset_means(f_real, m, subsets, seed)     # (S,)
    if m == len(f_gen):
        # every subset holds every sample: one kernel matrix of theirs for all, and the mean
        # across is the mean over the subset's real rows of each row's mean with the samples
        gen_means = np.full(subsets, within_mean(f_gen))
        row_means = polynomial_kernel(f_gen, f_real).mean(0)          # (M,)
        across = row_means.double()[real_idx].mean(1).cpu().numpy()   # (S,)
    else:
        gen_idx = kid_subsets(len(f_gen), m, subsets, seed + 1).to(f_gen.device)   # (S, m)
        gen_means = np.array([within_mean(f_gen[i]) for i in gen_idx])
        across = np.array([polynomial_kernel(f_gen[i], f_real[j]).mean(dtype=torch.float64).item()
                           for i, j in zip(gen_idx, real_idx)])
    values = gen_means + real_means - 2 * across                      # (S,) MMD^2 of each subset
    return values.mean(), values.std(), m

# precision, recall, density and coverage

PRECISION_K = 3         # k of the k-NN balls of precision and recall (Kynkäänniemi et al.'s)
DENSITY_K = 5           # k of density and coverage (Naeem et al.'s)
SET_N = 10_000          # KID and precision & co. use at most this many training digits, and
                        # precision & co. this many samples: k-NN radii shrink as N grows

def squared_distances(a, b):
    """(len(a), len(b)) squared Euclidean distances |a|^2 + |b|^2 - 2 a.b, rounding clipped at 0."""
    d2 = torch.addmm((b * b).sum(1)[None, :], a, b.T, alpha=-2)       # |b|^2 - 2 a.b
    return d2.add_((a * a).sum(1)[:, None]).clamp_(min=0)

def knn_radii2(f, k=PRECISION_K, block=1000):
    """Squared distance from each row of f (N, D) to its k-th nearest other row: (N,). With k
    a tuple, one column per k, (N, len(k)), from a single pass over blocks of rows."""
    largest, columns = (max(k), list(k)) if isinstance(k, tuple) else (k, k)
    out = []
    for i in range(0, len(f), block):
        d2 = squared_distances(f[i:i + block], f)                     # (B, N)
        nearest = d2.topk(largest + 1, dim=1, largest=False).values   # (B, largest + 1)
        out.append(nearest[:, columns])               # (B,) or (B, len(k)); column 0: the row
    return torch.cat(out)

def manifold_metrics(f_gen, f_real, real_radii2_precision=None, real_radii2_density=None,
                     block=1000):
    """Precision, recall, density and coverage of features f_gen (N, D) against f_real (M, D),
    from k-NN balls: a point's ball reaches to its k-th nearest neighbour in its own set (the
    real balls' squared radii for k = PRECISION_K and DENSITY_K may be passed, when known).
    Precision and recall (Kynkäänniemi et al. 2019, arXiv:1904.06991): the share of generated
    rows inside the real balls (quality), and of real rows inside the generated balls (variety).
    Density and coverage (Naeem et al. 2020, arXiv:2002.09797), from real balls only, so outliers
    can't inflate them: 1/(k N) sum_j sum_i 1[gen_j in ball_i] (about 1 for real samples), and
    the share of real balls holding a sample."""
    if real_radii2_precision is None:
        real_radii2_precision, real_radii2_density = knn_radii2(
            f_real, (PRECISION_K, DENSITY_K), block).unbind(1)        # (M,) each
    gen_radii2 = knn_radii2(f_gen, PRECISION_K, block)                # (N,)
    gen_inside, balls_holding = 0, 0
    real_covered = torch.zeros(len(f_real), dtype=torch.bool, device=f_real.device)   # (M,)
    real_hit = torch.zeros_like(real_covered)                         # (M,) its ball holds one
    for i in range(0, len(f_gen), block):
        d2 = squared_distances(f_gen[i:i + block], f_real)            # (B, M)
        gen_inside += (d2 <= real_radii2_precision[None, :]).any(1).sum().item()
        real_covered |= (d2 <= gen_radii2[i:i + block, None]).any(0)  # in a generated ball
        in_density_ball = d2 <= real_radii2_density[None, :]          # (B, M)
        balls_holding += torch.count_nonzero(in_density_ball).item()
        real_hit |= in_density_ball.any(0)
    N = len(f_gen)
    return (gen_inside / N, real_covered.double().mean().item(),
            balls_holding / (DENSITY_K * N), real_hit.double().mean().item())

# the digits

def digit_shares(pred):
    """(10,) the share of each predicted digit."""
    return torch.bincount(torch.as_tensor(pred), minlength=10).double() / len(pred)

def kl_divergence(p, q):
    """KL(p || q) of two distributions over the 10 digits; terms with p = 0 count 0."""
    p, q = torch.as_tensor(p).double(), torch.as_tensor(q).double()
    return (torch.special.xlogy(p, p) - torch.special.xlogy(p, q)).sum().item()

def classifier_score(probs):
    """Salimans et al.'s Inception Score (arXiv:1606.03498), our classifier's: exp(E_x KL(p(y|x) ||
    p(y))), p(y) the mean p(y|x): 10 for sure predictions spread evenly, 1 for one digit."""
    p = torch.as_tensor(probs).double()                               # (N, 10)
    kl = (torch.special.xlogy(p, p) - torch.special.xlogy(p, p.mean(0, keepdim=True))).sum(1)
    return kl.mean().exp().item()

# copies of the training set

COPY_DIMS = 32          # the coarse search compares 32 principal components of the pixels,
COPY_CANDIDATES = 8     # then re-checks the 8 nearest candidates on all 1,024 pixels
COPY_RATE = 0.01        # the share of the test digits that count as copies, by construction

def recentre(x):
    """Move each image x (N, 32, 32) by whole pixels so that its centre of mass lands on
    pixel (16, 16), where MNIST's makers centred every digit: a shifted copy is moved back."""
    N, H, W = x.shape
    rows, cols = torch.arange(H, device=x.device), torch.arange(W, device=x.device)   # (32,)
    mass = x.sum((1, 2)).clamp(min=1e-12)                             # (N,) 0 for a blank image
    cy, cx = (x.sum(2) * rows).sum(1) / mass, (x.sum(1) * cols).sum(1) / mass   # (N,) centres
    dy, dx = torch.floor(H / 2 - cy + 0.5).long(), torch.floor(W / 2 - cx + 0.5).long()
    # row i of the result is row i - dy of the image (wrapping round MNIST's blank margins)
    x = x.gather(1, ((rows - dy[:, None]) % H)[:, :, None].expand(N, H, W))
    return x.gather(2, ((cols - dx[:, None]) % W)[:, None, :].expand(N, H, W))

def nearest_two(x, index, block=100):
    """For images x (N, 1, 32, 32): the ratio d1 / d2 (N,) of the distances to the nearest and
    second-nearest re-centred training digit, d1 (N,), and the nearest's index j (N,). A coarse
    search on COPY_DIMS principal components finds COPY_CANDIDATES candidates (a projection never
    lengthens a distance, so an exact copy is at 0 there too); all pixels' distances pick."""
    # |xc - c|^2 - |xc|^2 = [xc, 1] . [-2 c, |c|^2] for coordinates xc of an image and c of a
    # training digit: one matrix product ranks the training digits by distance
    coords = index['coords']                                          # (M, D) training digits
    coords_aug = torch.cat([-2 * coords, (coords ** 2).sum(1, keepdim=True)], 1)   # (M, D + 1)
    K = min(COPY_CANDIDATES, len(coords))
    ratio, d1, j = [], [], []                                         # per block: (B,) each
    for i in range(0, len(x), block):
        xb = recentre(x[i:i + block, 0].float()).flatten(1)           # (B, 1024)
        xb_coords = (xb - index['mean']) @ index['axes']              # (B, D)
        xb_aug = torch.cat([xb_coords, torch.ones_like(xb_coords[:, :1])], 1)   # (B, D + 1)
        cand = (xb_aug @ coords_aug.T).topk(K, 1, largest=False).indices   # (B, K) the K nearest
        cand_pixels = index['train'][cand].float() / 255              # (B, K, 1024)
        exact, order = ((cand_pixels - xb[:, None, :]) ** 2).sum(2).sqrt().sort(1)   # (B, K)
        d1.append(exact[:, 0])
        ratio.append(torch.where(exact[:, 1] > 0, exact[:, 0] / exact[:, 1], 0.0))
        j.append(cand.gather(1, order[:, :1])[:, 0])
    return torch.cat(ratio), torch.cat(d1), torch.cat(j)                # (N,) each

def copy_index(x_train, x_val):
    """What copies() needs of training digits x_train (M, 1, 32, 32): their re-centred pixels as
    uint8 (M, 1024) (exact: multiples of 1/255), their mean, first COPY_DIMS principal axes and
    coordinates on them; 'threshold': the ratio at or below which COPY_RATE of x_val fall."""
    t = recentre(x_train[:, 0]).flatten(1)                            # (M, 1024)
    mean = t.mean(0)                                                  # (1024,)
    c = (t - mean).double()
    axes = torch.linalg.eigh(c.T @ c / len(t))[1][:, -COPY_DIMS:].flip(1).float()   # (1024, D)
    index = {'train': (t * 255).round().to(torch.uint8), 'mean': mean, 'axes': axes,
             'coords': (t - mean) @ axes}
    ratio = nearest_two(x_val, index)[0].sort().values                # (N_val,)
    index['threshold'] = ratio[math.ceil(COPY_RATE * len(ratio)) - 1]
    return index

def copies(x, index):
    """The share of images x (N, 1, 32, 32) that copy a training digit, and per image the
    distance ratio, the distance to the nearest training digit and its index. A copy has one
    training digit very close, then only ordinary ones, so the ratio of its distances to the
    nearest and second-nearest is small: Lowe's ratio test (2004), close to the authenticity of
    Alaa et al. 2022 (arXiv:2102.08921). On re-centred pixels, not features: in features, a copy
    moved by one pixel is no nearer its original than a new digit is. The other metrics reward
    copies: a copier beats real new digits on nearly every one of them."""
    ratio, d1, j = nearest_two(x, index)
    per_sample = {'copy_ratio': ratio, 'copy_distance': d1, 'nearest_train': j}
    return (ratio <= index['threshold']).double().mean().item(), per_sample

# -----------------------------------------------------------------------------
# the report card: real_stats() describes the real digits, report() scores images against them

PRESENT_SHARE = 0.01    # a digit is present when at least 1% of the samples are that digit
TRUSTED_ACCURACY = 0.95 # a classifier below this test accuracy is a poor yardstick: a warning
# The series' final part (its own classifier of this network) has FIDs of 0.30 for the test digits
# (ours: 0.28), 48.43 for its noise (ours, another noise: 103): the same scale, not yardstick.
SERIES_FID = {'validation set vs train': '0.30', 'Gaussian noise vs train': '48.43'}

def real_stats(f, pred, seed=0):
    """What a report needs of real features f (M, D) and predicted digits (M,): mean, covariance,
    `subset` (a seeded SET_N of them: KID's and precision's), its k-NN radii^2, KID's means."""
    mu, sigma = mean_cov(f)
    subset = torch.randperm(len(f), generator=torch.Generator().manual_seed(seed))[:SET_N]
    stats = dict(f=f, pred=pred, mu=mu, sigma=sigma, subset=subset)
    if len(subset) > DENSITY_K:  # with k or fewer, there is no k-th neighbour
        radii2 = knn_radii2(f[subset], (PRECISION_K, DENSITY_K))      # (M, 2)
        stats['radii2_precision'], stats['radii2_density'] = radii2.unbind(1)
    if len(subset) >= KID_SUBSET_SIZE:
        stats['kid_real_means'] = real_subset_means(f[subset], KID_SUBSET_SIZE, KID_SUBSETS, seed)
    return stats

def metrics(f, probs, real, seed=0):
    """Every metric but copies of generated features f (N, D) and digit probabilities (N, 10)
    against a real_stats(), the seconds of each part, and 'warnings' (too few images)."""
    N, D = f.shape
    r = {'n': N, 'n_real': len(real['f']), 'warnings': [], 'seconds': {}}
    lap = stopwatch()
    if N < D:
        r['warnings'].append(f'only {N} images, fewer than the {D} features: the covariance is '
                             f'rank-deficient and the FID biased upwards; quote FIDs at 10,000')
    r['mu'], r['sigma'] = mean_cov(f)                                 # (D,), (D, D)
    # the FID; real['mu'] and real['sigma'] are mean_cov() of the training digits' features
    r['fid'] = frechet_distance(r['mu'], r['sigma'], real['mu'], real['sigma'])
    r['seconds']['FID'] = lap()
    # KID and precision & co. against the real subset
    f_real = real['f'][real['subset']]                                # (min(M, SET_N), D)
    r['kid'], r['kid_std'], r['kid_subset'] = kernel_inception_distance(
        f, f_real, KID_SUBSETS, KID_SUBSET_SIZE, seed, real.get('kid_real_means'))
    if r['kid_subset'] < KID_SUBSET_SIZE:
        r['warnings'].append(f'KID on subsets of {r["kid_subset"]}, not {KID_SUBSET_SIZE}: noisier')
    r['seconds']['KID'] = lap()
    # precision, recall, density and coverage on at most SET_N samples (a seeded subset)
    f_pr = f[torch.randperm(N, generator=torch.Generator().manual_seed(seed))[:SET_N]]
    r['pr_n'], r['pr_n_real'] = len(f_pr), len(f_real)
    keys = ('precision', 'recall', 'density', 'coverage')
    if min(len(f_pr), len(f_real)) > DENSITY_K:
        r.update(zip(keys, manifold_metrics(f_pr, f_real, real['radii2_precision'],
                                            real['radii2_density'])))
    else:
        r.update(dict.fromkeys(keys, math.nan))
        r['warnings'].append(f'precision, recall, density and coverage need more than '
                             f'{DENSITY_K} images a side')
    r['seconds']['precision & co.'] = lap()
    # the digits: which ones, how sure, and KID within each digit (against all real digits)
    pred = probs.argmax(1)                                            # (N,)
    shares, real_shares = digit_shares(pred), digit_shares(real['pred'])   # (10,) each
    r['classifier_score'] = classifier_score(probs)
    r['per_sample'] = {'pred': pred, 'confidence': probs.max(1).values}    # (N,) each
    r['confidence'] = r['per_sample']['confidence'].double().mean().item()
    r['digits_present'] = int((shares >= PRESENT_SHARE).sum())
    r['digit_kl'] = kl_divergence(shares, real_shares)
    r['digits'] = []
    for d in range(10):
        fg, fr = f[pred == d], real['f'][real['pred'] == d]
        confidence = probs[pred == d].max(1).values.double().mean().item() if len(fg) else math.nan
        kid = (kernel_inception_distance(fg, fr, KID_DIGIT_SUBSETS, seed=seed)[0]
               if min(len(fg), len(fr)) >= 2 else math.nan)
        r['digits'].append({'digit': d, 'n': len(fg), 'share': shares[d].item(), 'kid': kid,
                            'real_share': real_shares[d].item(), 'confidence': confidence})
    r['seconds']['digits'] = lap()
    return r

def report(model, x, real, features='after-relu', batch_size=1000, seed=0):
    """The report card of images x (N, 1, 32, 32) in [0, 1] against a real_stats(): every metric,
    copies and per-sample results, the yardstick, the seconds."""
    lap, device = stopwatch(), metric_device(model)
    f, probs = embed(model, x, features, batch_size)                  # (N, D), (N, 10)
    seconds = {'features': lap()}
    r = metrics(f.to(device), probs.to(device), real, seed)
    r['seconds'] = {**seconds, **r['seconds']}
    lap()                                             # metrics timed its own parts
    r['copies'], per_sample = copies(x.to(device), real['copy'])
    r['per_sample'].update(per_sample)
    r['copy_threshold'] = real['copy']['threshold'].item()
    r['seconds']['copies'] = lap()
    r['per_sample'] = {k: v.cpu() for k, v in r['per_sample'].items()}
    r.update(classifier=classifier_id(model), features=features, device=str(device),
             test_accuracy=real.get('test_accuracy'))
    if r['test_accuracy'] is not None and r['test_accuracy'] < TRUSTED_ACCURACY:
        r['warnings'].append(f'classifier {r["classifier"]} classifies only '
                             f'{r["test_accuracy"]:.1%} of the test digits right: a barely '
                             f'trained yardstick, whose numbers say little')
    return r

def score(images, checkpoint=None, features='after-relu', data_dir='data', out_dir='out',
          device='auto', seed=0, batch_size=1000):
    """The report card of generated digits (any layout to_model_input takes) against the 60,000
    training digits: what `python fid.py` prints; checkpoint None: model.default_checkpoint()."""
    model, _ = load_classifier(checkpoint, get_device(device))
    real = training_stats(model, features, seed, data_dir, out_dir, batch_size)
    return report(model, to_model_input(images), real, features, batch_size, seed)

def training_stats(model, features='after-relu', seed=0, data_dir='data', out_dir='out',
                   batch_size=1000):
    """Every report's real side, on metric_device(model): real_stats() of the training digits, the
    test accuracy, copy_index() as 'copy'; cached in out_dir (per classifier, features, seed)."""
    def build_stats():
        x_train, _, x_val, y_val = load_mnist(data_dir)
        f, probs = embed(model, x_train[:, None], features, batch_size)   # (60000, D), (60000, 10)
        stats = real_stats(f.cpu(), probs.argmax(1).cpu(), seed)
        pred_val = embed(model, x_val[:, None], features, batch_size)[1].argmax(1).cpu()
        stats['test_accuracy'] = (pred_val == y_val).double().mean()
        return {k: np.asarray(v) for k, v in stats.items()}
    def build_copies():
        x_train, _, x_val, _ = load_mnist(data_dir)
        return {k: v.numpy() for k, v in copy_index(x_train[:, None], x_val[:, None]).items()}
    constants = repr((SET_N, PRECISION_K, DENSITY_K, KID_SUBSETS, KID_SUBSET_SIZE))
    stats = cached(Path(out_dir) / f'train_stats_{features}.npz', build_stats,
                   classifier=classifier_id(model), seed=seed, constants=constants)
    c = cached(Path(out_dir) / 'train_copy_index.npz', build_copies, dims=COPY_DIMS,
               candidates=COPY_CANDIDATES, rate=COPY_RATE)
    device = metric_device(model)
    real = {k: torch.from_numpy(v).to(device) for k, v in stats.items()
            if k in ('f', 'pred', 'subset', 'radii2_precision', 'radii2_density')}
    real.update({k: stats[k] for k in ('mu', 'sigma', 'kid_real_means') if k in stats})
    real['test_accuracy'] = stats['test_accuracy'].item()
    real['copy'] = {k: torch.from_numpy(c[k]).to(device)
                    for k in ('train', 'mean', 'axes', 'coords', 'threshold')}
    return real

def yardstick(classifier, test_accuracy, features, D):
    """The card's line that says what its numbers can be compared with."""
    shared = ('the shared yardstick' if classifier == SHARED_ID else
              f'not the shared yardstick {SHARED_ID}: compare only with its own numbers')
    return (f'yardstick: classifier {classifier} ({shared}; test accuracy {test_accuracy:.2%}) | '
            f'features {features} ({D})')

def print_report(r, name):
    final = (f" (real vs real at 10,000: {SERIES_FID['validation set vs train']} in the series' "
             "final part)" if r['features'] == 'after-relu' else '')
    print(f'\nreport card: {name} ({r["n"]:,} images) vs MNIST train ({r["n_real"]:,} images)')
    print(f'  FID               {r["fid"]:10.4f}   distance between the feature Gaussians{final}')
    print(f'  KID               {r["kid"]:10.4g}   +- {r["kid_std"]:.4g} over {KID_SUBSETS} '
          f'subsets of {r["kid_subset"]:,}; unbiased: 0 for the same distribution')
    print(f'  precision         {r["precision"]:10.3f}   share of samples inside the real '
          f'manifold: quality')
    print(f'  recall            {r["recall"]:10.3f}   share of real digits inside the samples\' '
          f'manifold: variety')
    print(f'  density           {r["density"]:10.3f}   real {DENSITY_K}-NN balls holding a '
          f'sample, on average, / {DENSITY_K}: about 1 for real digits')
    print(f'  coverage          {r["coverage"]:10.3f}   share of real {DENSITY_K}-NN balls '
          f'holding a sample: variety, outliers ignored')
    print(f'  copies            {r["copies"]:10.1%}   samples nearer a training digit than '
          f'{COPY_RATE:.0%} of the test digits are (nearest / second-nearest distance <= '
          f'{r["copy_threshold"]:.3f})')
    print(f'  classifier score  {r["classifier_score"]:10.2f}   of 10: confident and varied digits')
    print(f'  digits present    {r["digits_present"]:7d}/10   (at least {PRESENT_SHARE:.0%} of '
          f'the samples each) | digit mix KL {r["digit_kl"]:.4f} | mean confidence '
          f'{r["confidence"]:.3f}')
    print('\n  digit |  share | real share | confidence | KID')
    for d in r['digits']:
        print(f'  {d["digit"]:5d} | {d["share"]:6.1%} | {d["real_share"]:10.1%} | '
              f'{d["confidence"]:10.3f} | {d["kid"]:.4g}')
    print(f'\n{yardstick(r["classifier"], r["test_accuracy"], r["features"], len(r["mu"]))} | '
          f'N {r["n"]:,} vs {r["n_real"]:,} (KID subsets of {r["kid_subset"]:,} against '
          f'{r["pr_n_real"]:,}; precision/recall {r["pr_n"]:,} vs {r["pr_n_real"]:,}, k = '
          f'{PRECISION_K}; density/coverage k = {DENSITY_K})')
    for w in r['warnings']:
        print(f'warning: {w}', file=sys.stderr)
    print(f'scored in {sum(r["seconds"].values()):.2f} s on {r["device"]}: '
          + ' | '.join(f'{part} {s:.2f}' for part, s in r['seconds'].items()))

def plot_copies(x, r, index, path, n=24, per_row=4):
    """The n most copy-like samples, re-centred, each beside its nearest training digit."""
    s = r['per_sample']
    order = s['copy_ratio'].argsort()[:n]                             # (n,)
    train = index['train'][s['nearest_train'][order]].cpu().view(-1, 32, 32) / 255
    pairs = torch.stack([recentre(x[order, 0].cpu()), train], 1)      # (n, 2, 32, 32)
    tiles = np.full((math.ceil(n / per_row) * per_row, 2, 32, 32), np.nan)   # NaN: white
    tiles[:len(order)] = pairs.numpy()
    labels = [[f'r {s["copy_ratio"][i]:.2f}', f'd {s["copy_distance"][i]:.1f}'] for i in order]
    rows = len(tiles) // per_row
    plot_tiles(tiles.reshape(rows, 2 * per_row, 32, 32), path,
               f'{r["copies"]:.1%} copies: the most copy-like samples beside their nearest '
               f'training digit\n(r = nearest / second-nearest distance, a copy at r <= '
               f'{r["copy_threshold"]:.3f}; d = distance)', cols=['sample', 'train'] * per_row,
               labels=[sum(labels[k * per_row:(k + 1) * per_row], []) for k in range(rows)])

# -----------------------------------------------------------------------------
# `python fid.py`: the table of known failures, what each metric sees

def corrupt(x, sigma, g):
    """Add N(0, sigma^2) noise to the 28x28 digit inside each 32x32 image, clip to [0, 1]."""
    x = x.clone()
    digit = x[..., 2:30, 2:30]
    x[..., 2:30, 2:30] = (digit + sigma * torch.randn(digit.shape, generator=g)).clamp(0, 1)
    return x

def failure_table(model, real, x_train, x_val, y_val, features, batch_size, seed):
    """A report-card row for each set of images whose failure we know, against the training set:
    what each metric responds to. The test digits (the best a generator can honestly do); digits
    0-4 only (recall and coverage halve, the digit rows name the missing); blurred (precision
    stays, recall collapses); noise (precision and density fall first); pure noise of the training
    pixels' mean and std (FID, recall and coverage say it all); memorisers: training digits as
    they are, moved a pixel, or half copies (only copies sees what they are)."""
    g = torch.Generator().manual_seed(seed)
    digits = x_train[..., 2:30, 2:30]                                 # (60000, 1, 28, 28)
    noise = digits.mean() + digits.std() * torch.randn(len(x_val), 1, 28, 28, generator=g)
    copied = x_train[torch.randperm(len(x_train), generator=g)[:len(x_val)]]   # (N_val, 1, 32, 32)
    half = len(x_val) // 2
    rows = [('validation set vs train', x_val),
            ('validation digits 0-4 only', x_val[y_val < 5]),
            ('validation blurred (3x3 box)', F.avg_pool2d(x_val, 3, stride=1, padding=1)),
            ('validation + noise sigma 0.1', corrupt(x_val, 0.1, g)),
            ('validation + noise sigma 0.5', corrupt(x_val, 0.5, g)),
            ('Gaussian noise vs train', F.pad(noise, (2, 2, 2, 2))),
            ('training digits, copied', copied),
            ('training digits moved 1 pixel', copied.roll(1, dims=3)),
            ('half copies, half validation', torch.cat([copied[:half], x_val[half:]]))]
    print(f'\n| compared ({features} features) | N | FID | final part | '
          f'KID | precision | recall | density | coverage | copies | classifier score | '
          f'digits present | digit mix KL |\n|{"---|" * 13}')
    results = {}
    for name, x in rows:
        r = results[name] = report(model, x, real, features, batch_size, seed)
        final = SERIES_FID.get(name, '') if features == 'after-relu' else 'n/a'
        print(f'| {name} | {r["n"]:,} | {r["fid"]:.2f} | {final} | {r["kid"]:.4g} | '
              f'{r["precision"]:.3f} | {r["recall"]:.3f} | {r["density"]:.3f} | '
              f'{r["coverage"]:.3f} | {r["copies"]:.1%} | {r["classifier_score"]:.2f} | '
              f'{r["digits_present"]} | {r["digit_kl"]:.3f} |', flush=True)
    return results

def main(argv=None):
    args = parse_args(argv)  # the flags, at the end of the file
    model, _ = load_classifier(args.checkpoint, args.device)
    print(f'classifier {classifier_id(model)} ({args.checkpoint}): {summary(model)}')
    x = load_images(args.images) if args.images else None             # (N, 1, 32, 32)
    real = training_stats(model, args.features, args.seed, args.data_dir, args.out_dir,
                          args.batch_size)
    if x is None:  # the table of known failures
        x_train, _, x_val, y_val = load_mnist(args.data_dir)
        failure_table(model, real, x_train[:, None], x_val[:, None], y_val, args.features,
                      args.batch_size, args.seed)
        line = yardstick(classifier_id(model), real['test_accuracy'], args.features,
                         len(real['mu']))
        return print(f'\n{line} | N as in each row vs {len(real["f"]):,} training images')
    r = report(model, x, real, args.features, args.batch_size, args.seed)
    print_report(r, args.images)
    path = Path(args.out_dir) / f'{Path(args.images).stem or "samples"}_copies.png'
    plot_copies(x, r, real['copy'], path)
    print(f'wrote {path}')
    if args.save_stats:
        stats = dict(mu=r['mu'], sigma=r['sigma'], classifier=r['classifier'],
                     features=r['features'], n=r['n'])
        print(f'{"replaced" if Path(args.save_stats).exists() else "wrote"} {args.save_stats}')
        write_atomic(args.save_stats, lambda tmp: np.savez(tmp, **stats))

# -----------------------------------------------------------------------------
# plumbing: a first reading can skip the rest of this file. The flags, checked and printed; the
# device picked, the folders checked

def parse_args(argv):
    parser = argparse.ArgumentParser(description='A report card for generated MNIST digits.',
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('images', nargs='?', help='.npy, .pt or a PNG folder; none: the table')
    parser.add_argument('--features', default='after-relu', choices=['before-relu', 'after-relu'],
                        help="before the last ReLU (the blog's) or after it (the series')")
    parser.add_argument('--save-stats', metavar='NPZ', help="also save the images' mu and sigma")
    parser.add_argument('--checkpoint', default=default_checkpoint(),
                        help='yours (train.py writes it) if there, else the shared classifier')
    parser.add_argument('--data-dir', default='data', help='folder with (or for) the IDX files')
    parser.add_argument('--out-dir', default='out', help='folder for the caches and the figure')
    parser.add_argument('--batch-size', type=int, default=1000, help='images per forward pass')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random subsets and noise')
    parser.add_argument('--device', default='auto', help='auto: cuda, then mps, then cpu')
    args = parser.parse_args(argv)
    if args.save_stats and (not args.images or not args.save_stats.endswith('.npz')):
        parser.error('--save-stats needs images, and a file name ending in .npz')
    args.device = get_device(args.device)
    print(vars(args))
    for folder in [args.out_dir] + ([Path(args.save_stats).parent] if args.save_stats else []):
        check_writable(folder)                                        # before any work
    return args

# generated digits in the layouts and ranges generators write them, made the classifier's input

def to_model_input(x, name='the generated digits'):
    """N >= 2 digits of 28x28 or 32x32 pixels, any layout, floats in [0, 1] (1e-6 outside is
    clipped) or uint8, as the classifier's (N, 1, 32, 32) float32; else one ValueError."""
    x = torch.as_tensor(np.array(x) if isinstance(x, np.ndarray) else x)   # numpy: a writable copy
    pixels = x.shape[1:].numel() if x.ndim >= 2 else 0
    if pixels not in (784, 1024) or len(x) < 2:
        raise ValueError(f'{name}: expected at least 2 grayscale images of 28x28 or 32x32 pixels '
                         f'(N, 28, 28), (N, 1, 32, 32), (N, 784), ...; got shape {tuple(x.shape)}')
    if x.dtype == torch.uint8:
        x = x / 255
    elif not x.is_floating_point():
        raise ValueError(f'{name}: expected float images in [0, 1] or uint8 0-255, got {x.dtype}')
    lo, hi = x.min().item(), x.max().item()
    if not (lo >= -1e-6 and hi <= 1 + 1e-6):                         # NaN fails too
        hint = ': they look like [-1, 1], map them with (x + 1) / 2' if lo < -0.5 else ''
        raise ValueError(f'{name}: float images must lie in [0, 1], found values from {lo:.6g} '
                         f'to {hi:.6g}{hint}')
    side = 28 if pixels == 784 else 32
    x = x.float().reshape(len(x), 1, side, side)
    x = x.clamp(0, 1) if lo < 0 or hi > 1 else x      # in range: used as it is, not copied
    return F.pad(x, (2, 2, 2, 2)) if side == 28 else x                # (N, 1, 32, 32)

def load_images(path):
    """to_model_input() of a .npy or .pt file, or of a folder of PNGs (by name, as pytorch-fid)."""
    path = Path(path)
    if path.is_dir():
        from matplotlib.image import imread
        files = sorted(path.glob('*.png'))
        if not files:
            raise ValueError(f'{path}: a folder without .png images')
        x = np.stack([imread(p) for p in files])       # (N, H, W), or (N, H, W, 3 or 4) if RGB(A)
        x = x[..., 0] if x.ndim == 4 else x            # gray saved as colour: the first channel
    elif path.suffix == '.npy':
        x = np.load(path)
    elif path.suffix == '.pt':
        x = torch.load(path, weights_only=True)
    else:
        raise ValueError(f'{path}: expected a .npy or .pt file, or a folder of PNG images')
    return to_model_input(x, path)

# the caches of training_stats, where the metrics run, and the stopwatch of the card's last line

def cached(path, build, **key):
    """The arrays saved at path if saved with this key (what made them); else build()'s, saved.
    A file read once is kept in memory, so a repeat call (score() every epoch) reads no disk."""
    mtime = Path(path).stat().st_mtime_ns if Path(path).exists() else None
    if mtime is not None and IN_MEMORY.get(str(path), (None,))[0] != mtime:
        with np.load(path) as npz:
            IN_MEMORY[str(path)] = (mtime, dict(npz))
    z = IN_MEMORY[str(path)][1] if mtime is not None else {}
    if z and all(k in z and z[k] == v for k, v in key.items()):
        return z
    arrays = {**build(), **key}
    write_atomic(path, lambda tmp: np.savez(tmp, **arrays))
    print(f'wrote {path}', file=sys.stderr)
    return arrays

IN_MEMORY = {}  # path: (its modification time, the arrays cached() read from it)

def metric_device(model):
    """Where the metrics run: the classifier's device, but the CPU for MPS, which has no float64."""
    device = next(model.parameters()).device
    return torch.device('cpu') if device.type == 'mps' else device

def stopwatch():
    """A function that returns the seconds since its last call (the first: since stopwatch())."""
    times = [time.perf_counter()]
    def lap():
        if torch.cuda.is_available():
            torch.cuda.synchronize()                  # the GPU's work done, not only queued
        times.append(time.perf_counter())
        return times[-1] - times[-2]
    return lap

if __name__ == '__main__':
    run_script(main)
