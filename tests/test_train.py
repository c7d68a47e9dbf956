"""
Tests for train.py on a small synthetic set: one epoch against a loop written here, the mean
loss and the evaluation against direct computations, the loop's cadence, the command's flags
and checkpoint, bit-for-bit resume after Ctrl-C (also a real one, on the real data), the stop
on a NaN loss, and the command's refusals.
"""

import argparse
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import train as train_py
from model import Classifier, classifier_id, load_classifier
from train import evaluate, make_optimizer, train, train_epoch

ROOT = Path(__file__).resolve().parent.parent


def synthetic(n, seed=0):
    """n noisy 32x32 images (n, 32, 32), as load_mnist gives them, whose class is where a bright
    6x6 square sits (10 places)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = 0.1 * torch.rand(n, 32, 32, generator=g)
    for i, c in enumerate(y.tolist()):
        r, col = 3 + 12 * (c // 5), 3 + 5 * (c % 5)
        x[i, r:r + 6, col:col + 6] += 0.9
    return x, y

def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

# -----------------------------------------------------------------------------
# one epoch, and the evaluation

class Recorder(nn.Module):
    """A linear model that records which images it saw: image i is filled with the value i."""
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(32 * 32, 10)
        self.seen = []
    def forward(self, x):
        self.seen.append(x[:, 0, 0, 0].round().long().tolist())
        return self.linear(x.flatten(1))

def test_train_epoch_visits_every_image_once_in_a_new_order():
    N = 37
    x = torch.arange(N, dtype=torch.float32).view(N, 1, 1).expand(N, 32, 32).contiguous()
    model = Recorder()
    orders = []
    for _ in range(2):
        model.seen = []
        train_epoch(model, torch.optim.SGD(model.parameters(), lr=0.0), x, torch.arange(N) % 10, 8,
                    'cpu')
        assert [len(b) for b in model.seen] == [8, 8, 8, 8, 5]      # the last batch is smaller
        orders.append([i for b in model.seen for i in b])
    assert all(sorted(order) == list(range(N)) for order in orders)   # each image exactly once
    assert orders[0] != orders[1] and orders[0] != list(range(N))     # shuffled anew each epoch

def test_train_epoch_returns_the_mean_batch_loss():
    # lr 0: the weights stay; 40 images in 5 batches of 8, so the mean of the batch means is
    # the cross-entropy over the whole set
    torch.manual_seed(0)
    x, y = torch.randn(40, 32, 32), torch.randint(0, 10, (40,))
    model = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))
    loss = train_epoch(model, torch.optim.SGD(model.parameters(), lr=0.0), x, y, 8, 'cpu')
    assert loss == pytest.approx(F.cross_entropy(model(x[:, None]), y).item(), rel=1e-5)
    # 37 images in batches of 8 and one of 5: each batch's mean counts once, as in the blog
    x, y = x[:37], y[:37]
    torch.manual_seed(1)
    perm = torch.randperm(37)
    expected = sum(F.cross_entropy(model(x[perm[i:i + 8], None]), y[perm[i:i + 8]]).item()
                   for i in range(0, 37, 8)) / 5
    torch.manual_seed(1)
    loss = train_epoch(model, torch.optim.SGD(model.parameters(), lr=0.0), x, y, 8, 'cpu')
    assert loss == pytest.approx(expected, rel=1e-6)

def test_train_epoch_equals_a_loop_written_here():
    # the textbook loop: shuffle, batches, forward, loss, zero_grad, backward, step; dropout on
    x, y = synthetic(70)
    torch.manual_seed(1)
    model, written_here = Classifier().eval(), Classifier()   # train_epoch switches dropout on
    written_here.load_state_dict(model.state_dict())
    opt, opt_here = (torch.optim.Adam(m.parameters(), lr=1e-2) for m in (model, written_here))
    torch.manual_seed(2)
    for _ in range(2):
        train_epoch(model, opt, x, y, 16, 'cpu')
    torch.manual_seed(2)
    for _ in range(2):
        perm = torch.randperm(70)
        for i in range(0, 70, 16):
            loss = F.cross_entropy(written_here(x[perm[i:i + 16], None]), y[perm[i:i + 16]])
            opt_here.zero_grad()
            loss.backward()
            opt_here.step()
    assert same_weights(model.state_dict(), written_here.state_dict())

def test_evaluate_equals_a_direct_computation():
    torch.manual_seed(0)
    model = Classifier().train()                      # dropout on: evaluate switches it off
    x, y = torch.rand(23, 32, 32), torch.randint(0, 10, (23,))   # as load_mnist gives them
    loss, acc = evaluate(model, x, y)
    with torch.no_grad():
        logits = model.eval()(x[:, None])
    assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert acc == (logits.argmax(1) == y).sum().item() / 23

# -----------------------------------------------------------------------------
# the loop over epochs

def fit(epochs=4, log_every=10, seed=0, lr=1e-2, batch_size=32):
    """train() on the synthetic set, as main() runs it: (model, history, the histories that
    save_checkpoint was given), the checkpoint written nowhere."""
    torch.manual_seed(seed)
    model = Classifier().to(memory_format=torch.channels_last)
    (x, y), (x_val, y_val) = synthetic(320), synthetic(100, seed=1)
    saved = []
    with pytest.MonkeyPatch.context() as m:
        m.setattr(train_py, 'save_checkpoint', lambda path, model, optimizer, history, args:
                  saved.append([dict(e) for e in history]))
        args = argparse.Namespace(epochs=epochs, batch_size=batch_size, log_every=log_every,
                                  device='cpu', out_dir='nowhere')
        history = train(model, make_optimizer(model, lr), x, y, x_val, y_val, args, [])
    return model, history, saved

def test_the_loop_validates_every_log_every_epochs_and_saves_every_epoch(capsys):
    model, history, saved = fit(epochs=5, log_every=2)
    assert [h['epoch'] for h in history] == [1, 2, 3, 4, 5]
    assert [h['epoch'] for h in history if h['val_loss'] is not None] == [2, 4, 5]  # and the last
    assert saved == [history[:k] for k in range(1, 6)]      # after each epoch, its whole history
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f'epoch   1 | train loss {history[0]["train_loss"]:.4f} | ')
    x_val, y_val = synthetic(100, seed=1)
    val_loss, val_acc = evaluate(model, x_val, y_val)
    assert (val_loss, val_acc) == (history[-1]['val_loss'], history[-1]['val_acc'])
    assert f'| val loss {val_loss:.4f} | val acc {100 * val_acc:.2f}% |' in lines[4]

def test_it_learns():
    _, history, _ = fit(epochs=4)
    losses = [h['train_loss'] for h in history]
    pins = (f'this test pins the blog\'s pace (its network and Adam at lr 1e-2 on an easy '
            f'synthetic set); an edit of model.py or make_optimizer may fail it: {losses}, '
            f'validation accuracy {history[-1]["val_acc"]}')
    assert losses[0] > 1.0 and losses[-1] < 0.5 * losses[0], pins   # ln(10) = 2.3 at the start
    assert history[-1]['val_acc'] > 0.9, pins

def test_same_seed_same_weights_bit_for_bit():
    a, b, c = (fit(epochs=2, seed=s)[0].state_dict() for s in (3, 3, 4))
    assert same_weights(a, b) and not same_weights(a, c)

# -----------------------------------------------------------------------------
# the command, in this process, on the synthetic set

@pytest.fixture
def fake_data(monkeypatch):
    """Make main() load the synthetic set; records the --data-dir it was asked for."""
    asked = []
    def load_mnist(data_dir):
        asked.append(data_dir)
        (x, y), (x_val, y_val) = synthetic(320), synthetic(100, seed=1)
        return x, y, x_val, y_val
    monkeypatch.setattr(train_py, 'load_mnist', load_mnist)
    return asked

def main(tmp_path, *args, out='out'):
    train_py.main(['--epochs', '3', '--batch-size', '32', '--lr', '0.01', '--device', 'cpu',
                   '--out-dir', str(tmp_path / out), *map(str, args)])
    return tmp_path / out / 'classifier.pt'

def test_cli_flags_reach_the_run_and_its_checkpoint(tmp_path, fake_data, capsys):
    path = main(tmp_path, '--epochs', 4, '--batch-size', 40, '--lr', 0.005, '--seed', 7,
                '--log-every', 3, '--data-dir', 'somewhere')
    assert fake_data == ['somewhere']
    model, history, _ = fit(epochs=4, batch_size=40, lr=0.005, seed=7, log_every=3)
    loaded, ckpt = load_classifier(path)
    assert same_weights(ckpt['model'], model.state_dict())   # the run these flags ask for
    timed = [{**h, 'seconds': c['seconds']} for h, c in zip(history, ckpt['history'])]
    assert ckpt['history'] == timed and len(timed) == 4
    assert ckpt['epoch'] == 4 and ckpt['val_acc'] == history[-1]['val_acc']
    assert ckpt['config'] == {'data_dir': 'somewhere', 'epochs': 4, 'batch_size': 40, 'lr': 0.005,
                              'seed': 7, 'device': 'cpu', 'log_every': 3, 'resume': False,
                              'out_dir': str(tmp_path / 'out'), 'compare_blog_loop': 0,
                              'optimizer': type(make_optimizer(model, 0.1)).__name__}
    assert ckpt['network'] == repr(Classifier())
    out = capsys.readouterr().out
    assert f'Model accuracy: {100 * history[-1]["val_acc"]:.2f}%' in out
    assert f'(classifier {classifier_id(loaded)}, ' in out and 'trained 4 epochs in' in out
    assert (path.parent / 'loss.png').read_bytes()[:4] == b'\x89PNG'
    assert sorted(p.name for p in path.parent.iterdir()) == ['classifier.pt', 'loss.png']

def interrupt_in_epoch(monkeypatch, epoch):
    """Ctrl-C at the end of the training pass of `epoch`: its weights have moved, unsaved."""
    real, calls = train_py.train_epoch, []
    def train_epoch(*args):
        loss = real(*args)
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return loss
    monkeypatch.setattr(train_py, 'train_epoch', train_epoch)

def test_ctrl_c_then_resume_equals_the_unbroken_run(tmp_path, fake_data, monkeypatch, capsys):
    unbroken = torch.load(main(tmp_path, '--epochs', 5, '--log-every', 2, out='unbroken'),
                          weights_only=True)
    with monkeypatch.context() as m:
        interrupt_in_epoch(m, 3)
        with pytest.raises(KeyboardInterrupt):
            main(tmp_path, '--epochs', 5, '--log-every', 2)
    out = capsys.readouterr().out
    path = tmp_path / 'out' / 'classifier.pt'
    assert torch.load(path, weights_only=True)['epoch'] == 2      # the last epoch printed
    assert out.rstrip().splitlines()[-1].startswith('epoch   2 |')
    torch.manual_seed(99)          # whatever the random state now: the checkpoint's goes on
    resumed = main(tmp_path, '--epochs', 5, '--log-every', 2, '--resume')
    resumed = torch.load(resumed, weights_only=True)
    assert 'resuming' in capsys.readouterr().out
    assert same_weights(resumed['model'], unbroken['model'])
    strip = lambda history: [{k: v for k, v in h.items() if k != 'seconds'} for h in history]
    assert strip(resumed['history']) == strip(unbroken['history'])
    # and on: --epochs is the one setting that may change
    longer = torch.load(main(tmp_path, '--epochs', 6, '--log-every', 2, '--resume'),
                        weights_only=True)
    assert [h['epoch'] for h in longer['history']] == [1, 2, 3, 4, 5, 6]

def test_ctrl_c_in_the_first_epoch_leaves_the_checkpoint_that_was_there(tmp_path, fake_data,
                                                                          monkeypatch):
    before = main(tmp_path).read_bytes()
    interrupt_in_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        main(tmp_path, '--seed', 1)
    assert (tmp_path / 'out' / 'classifier.pt').read_bytes() == before
    assert not (tmp_path / 'out' / 'classifier.prev.pt').exists()

@pytest.mark.parametrize('args, message', [
    (['--lr', 0.02], 'was trained with lr 0.01 (now 0.02); keep these'),
    (['--batch-size', 16], 'was trained with batch_size 32 (now 16)'),
    (['--seed', 1, '--lr', 0.1], 'was trained with lr 0.01 (now 0.1), seed 0 (now 1)'),
    (['--epochs', 3], 'holds epoch 3 already; ask for more, e.g. --epochs 53'),
])
def test_resume_refuses_what_would_change_the_run(tmp_path, fake_data, args, message):
    path = main(tmp_path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')):
        main(tmp_path, '--resume', *args)
    assert path.read_bytes() == before

def test_resume_refuses_another_optimizer_or_no_checkpoint(tmp_path, fake_data, monkeypatch):
    path = main(tmp_path)
    trained = type(make_optimizer(Classifier(), 0.1))       # make_optimizer's, edited or not
    other = torch.optim.Adam if trained is torch.optim.SGD else torch.optim.SGD
    monkeypatch.setattr(train_py, 'make_optimizer', lambda model, lr: other(model.parameters(), lr))
    with pytest.raises(ValueError, match=f'{path} was trained with optimizer {trained.__name__} '
                                         fr'\(now {other.__name__}\)'):
        main(tmp_path, '--resume', '--epochs', 5)
    with pytest.raises(FileNotFoundError, match='no such checkpoint'):
        main(tmp_path, '--resume', out='none')

def test_resume_refuses_a_checkpoint_of_an_older_train_py_in_one_line(tmp_path, fake_data):
    path = main(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    del ckpt['config']['optimizer']                     # train.py did not record it at first
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=r'was trained with optimizer None \(now '):
        main(tmp_path, '--resume', '--epochs', 5)

@pytest.mark.parametrize('flag', ['--epochs', '--batch-size', '--log-every'])
def test_a_flag_below_one_is_refused_before_any_work(tmp_path, fake_data, capsys, flag):
    before = main(tmp_path).read_bytes()
    with pytest.raises(SystemExit):
        main(tmp_path, flag, 0)
    assert '--epochs, --batch-size and --log-every must be at least 1' in capsys.readouterr().err
    assert (tmp_path / 'out' / 'classifier.pt').read_bytes() == before      # nothing moved
    assert not (tmp_path / 'out' / 'classifier.prev.pt').exists()

def test_a_new_run_keeps_the_checkpoint_that_was_there(tmp_path, fake_data, capsys):
    path, prev = tmp_path / 'out' / 'classifier.pt', tmp_path / 'out' / 'classifier.prev.pt'
    first = main(tmp_path, '--seed', 1).read_bytes()
    main(tmp_path, '--seed', 2)
    assert prev.read_bytes() == first and f'kept {path} as {prev}\n' in capsys.readouterr().out
    second = path.read_bytes()
    main(tmp_path, '--seed', 3)
    assert prev.read_bytes() == second and f'kept {path} as {prev}, replacing the one there' in \
        capsys.readouterr().out
    main(tmp_path, '--seed', 3, '--epochs', 4, '--resume')     # --resume goes on in place
    assert prev.read_bytes() == second

def test_an_unusable_out_dir_is_found_before_any_work(tmp_path, fake_data):
    (tmp_path / 'file').write_text('')
    with pytest.raises(ValueError, match='cannot write into the folder'):
        main(tmp_path, out='file')
    assert fake_data == []                            # the data was not even loaded

@pytest.mark.parametrize('bad', ['nan', 'inf', '-inf'])
def test_a_loss_that_is_not_finite_stops_and_keeps_the_last_good_checkpoint(
        tmp_path, fake_data, monkeypatch, bad):
    real, calls = train_py.train_epoch, []
    def diverges_at_epoch_3(*args):
        calls.append(1)
        loss = real(*args)
        return loss * 0 + float(bad) if len(calls) == 3 else loss
    monkeypatch.setattr(train_py, 'train_epoch', diverges_at_epoch_3)
    path = tmp_path / 'out' / 'classifier.pt'
    with pytest.raises(FloatingPointError, match=f'the train loss became {bad} at epoch 3: '
                                                 f'training stopped, {path} holds epoch 2; try a '
                                                 f'smaller --lr'):
        main(tmp_path, '--epochs', 5)
    assert torch.load(path, weights_only=True)['epoch'] == 2

def test_a_loss_not_finite_at_the_first_epoch_saves_nothing_and_keeps_the_old_checkpoint(
        tmp_path, fake_data, monkeypatch):
    path = main(tmp_path, '--epochs', 1)
    before = path.read_bytes()
    monkeypatch.setattr(train_py, 'train_epoch', lambda *args: float('inf'))
    with pytest.raises(FloatingPointError, match='at epoch 1: training stopped, nothing was saved'):
        main(tmp_path, '--epochs', 2)
    assert path.read_bytes() == before and not path.with_name('classifier.prev.pt').exists()

def test_compare_blog_loop_runs_the_posts_layout_then_ours(tmp_path, fake_data, monkeypatch):
    layouts = []   # whether a convolution's weight is channels-last, for each epoch timed
    def records(model, *args):
        w = next(p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1)  # (C', C, k, k)
        layouts.append(w.is_contiguous(memory_format=torch.channels_last))
        return train_epoch(model, *args)
    monkeypatch.setattr(train_py, 'train_epoch', records)
    main(tmp_path, '--compare-blog-loop', 2)
    assert layouts == [False, True, False, True]              # blog (the post's), then ours

def test_compare_blog_loop_times_both_and_trains_nothing(tmp_path, fake_data, capsys):
    main(tmp_path, '--compare-blog-loop', 2, '--data-dir', 'elsewhere')
    assert fake_data == ['elsewhere']                 # its own data, from --data-dir, once
    out = capsys.readouterr().out
    assert out.count('| blog loop |') == 2 and out.count('| ours loop |') == 2
    assert 'median over 2 epochs on cpu: blog loop' in out
    assert not (tmp_path / 'out' / 'classifier.pt').exists()

def test_compare_blog_loop_seeds_its_models_and_ignores_resume(tmp_path, fake_data, monkeypatch):
    first = []   # the first weight of each fresh model, as each loop gets it
    def records(loop):
        def epoch(model, *args):
            first.append(next(model.parameters()).flatten()[0].item())
            return loop(model, *args)
        return epoch
    monkeypatch.setattr(train_py, 'train_epoch', records(train_epoch))
    main(tmp_path, '--compare-blog-loop', 1, '--resume')     # no checkpoint: not even read
    main(tmp_path, '--compare-blog-loop', 1, '--seed', 0)
    main(tmp_path, '--compare-blog-loop', 1, '--seed', 1)
    assert first[:2] == first[2:4] != first[4:]               # --seed says which models

# -----------------------------------------------------------------------------
# a real Ctrl-C, to a real process

def test_a_real_ctrl_c_keeps_the_last_epoch_and_says_how_to_resume(tmp_path):
    # train.py run as `python train.py` runs it (its __main__ block), on 2,000 random images
    code = ('import runpy, torch, mnist; '
            'mnist.load_mnist = lambda d: (torch.rand(2000, 32, 32), torch.arange(2000) % 10, '
            'torch.rand(100, 32, 32), torch.arange(100) % 10); '
            'runpy.run_path("train.py", run_name="__main__")')
    p = subprocess.Popen([sys.executable, '-u', '-c', code, '--epochs', '500', '--device', 'cpu',
                          '--out-dir', str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in p.stdout:
        if line.startswith('epoch   1 |'):
            p.send_signal(signal.SIGINT)
            break
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and 'Traceback' not in err, err
    assert torch.load(tmp_path / 'classifier.pt', weights_only=True)['epoch'] >= 1
    assert err.endswith('interrupted: nothing half-written was left behind; the checkpoint '
                        'holds the last epoch printed above: to go on, add --resume to the same '
                        'command\n')
    assert sorted(f.name for f in tmp_path.iterdir()) == ['classifier.pt']   # nothing half-written

def test_the_final_accuracy_is_on_the_validation_set(tmp_path, fake_data, monkeypatch, capsys):
    # which images each evaluation sees: the synthetic set has 320 training, 100 validation
    seen = []
    def spy(model, x, y):
        seen.append(len(x))
        return evaluate(model, x, y)
    monkeypatch.setattr(train_py, 'evaluate', spy)
    path = main(tmp_path)
    x_val, y_val = synthetic(100, seed=1)
    _, acc = evaluate(load_classifier(path)[0], x_val, y_val)
    assert seen == [100, 100]                       # at the last epoch, then "Model accuracy"
    assert f'Model accuracy: {100 * acc:.2f}%' in capsys.readouterr().out
