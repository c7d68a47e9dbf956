"""
Train the blog's MNIST classifier with a hand-written loop, as the "Training" section of the
blog post "Latent Diffusion Series: MNIST Classifier" (Nick Tasios) does: Adam, cross-entropy,
a new permutation every epoch, the test set as the validation set, and the post's settings as
the flags' defaults: --lr 1e-3, --batch-size 256, --epochs 100, --log-every 10 (its i_log).

    python train.py                        # 100 epochs, as in the blog (device: auto)
    python train.py --device cpu --epochs 10
    python train.py --resume --epochs 150  # continue out/classifier.pt up to epoch 150
    python train.py --compare-blog-loop 3  # time the blog's loop against ours, then exit

Writes out/classifier.pt after every epoch, and out/loss.png at the end.
"""

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mnist import check_writable, load_mnist, run_script, save_figure, write_atomic
from model import Classifier, classifier_id, get_device, load_classifier, summary

# -----------------------------------------------------------------------------
# the blog's training: the optimizer, its epoch, the evaluation, the loop, the figure

def make_optimizer(model, lr):
    """The blog's optimizer, Adam; all of train.py makes it here, so trying another is this one
    line and its own --lr: torch.optim.SGD(model.parameters(), lr, momentum=0.9), --lr 0.05."""
    return torch.optim.Adam(model.parameters(), lr=lr)

def blog_epoch(model, optimizer, x_train, y_train, batch_size, device):
    """One epoch as the blog's inner loop writes it, on x_train (N, 32, 32) and y_train (N,) on
    the host: a new order, then per batch: copy it to the device, forward, loss, backward, step;
    the mean batch loss. --compare-blog-loop runs it; train() runs train_epoch, its faster twin."""
    model.train()
    num_batches = math.ceil(len(x_train) / batch_size)
    train_ids = torch.randperm(len(x_train))
    average_loss = 0.0
    for bid in range(num_batches):
        batch_ids = train_ids[bid * batch_size:(bid + 1) * batch_size]
        x = x_train[batch_ids, None].to(device)       # (B, 1, 32, 32), copied every step
        y = y_train[batch_ids].to(device)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        average_loss += loss.item()                    # waits for the device every step
    return average_loss / num_batches

@torch.no_grad()
def evaluate(model, x, y, batch_size=1000):
    """The mean cross-entropy and the accuracy of model on x, y, in eval mode (no dropout)."""
    model.eval()
    loss_sum = correct = 0
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        logits = model(xb)                             # (B, 10)
        loss_sum += F.cross_entropy(logits, yb, reduction='sum')
        correct += (logits.argmax(1) == yb).sum()
    return loss_sum.item() / len(x), correct.item() / len(x)

def train(model, optimizer, x_train, y_train, x_val, y_val, epochs, batch_size, log_every,
          history, ckpt_path, config):
    """The blog's outer loop, from the epoch after history's (a dict per epoch; []: a new run) up
    to `epochs`: train, validate every log_every epochs and at the last, save the checkpoint."""
    for epoch in range(len(history) + 1, epochs + 1):
        # one pass over the training set: blog_epoch's steps, made faster (train_epoch, below)
        t0 = time.perf_counter()
        train_loss = train_epoch(model, optimizer, x_train, y_train, batch_size).item()
        dt = time.perf_counter() - t0
        # a NaN or infinite loss has ruined the weights: stop, the last good epoch kept on disk
        if not math.isfinite(train_loss):
            kept = f'{ckpt_path} holds epoch {epoch - 1}' if history else 'nothing was saved'
            raise FloatingPointError(f'the train loss became {train_loss} at epoch {epoch}: '
                                     f'training stopped, {kept}; try a smaller --lr')
        # the validation loss and accuracy, every log_every epochs (the blog's i_log) and the last
        line = f'epoch {epoch:3d} | train loss {train_loss:.4f}'
        val_loss = val_acc = None
        if epoch % log_every == 0 or epoch == epochs:
            val_loss, val_acc = evaluate(model, x_val, y_val)
            line += f' | val loss {val_loss:.4f} | val acc {100 * val_acc:.2f}%'
        history.append(dict(epoch=epoch, train_loss=train_loss, val_loss=val_loss,
                            val_acc=val_acc, seconds=dt))
        # the checkpoint, every epoch; a new run first moves the last run's to classifier.prev.pt
        if epoch == 1:
            keep_previous(ckpt_path)
        save_checkpoint(ckpt_path, model, optimizer, history, config)
        print(f'{line} | {dt:.2f} s | {len(x_train) / dt / 1000:.1f}k img/s', flush=True)
    return history

def plot_loss(history, path):
    """The blog's loss figure: the train and validation loss against the epoch."""
    from matplotlib.figure import Figure  # not pyplot: nothing opens a window
    ax = Figure(figsize=(6, 4)).subplots()
    val = [h for h in history if h['val_loss'] is not None]
    ax.plot([h['epoch'] for h in history], [h['train_loss'] for h in history], label='train')
    ax.plot([h['epoch'] for h in val], [h['val_loss'] for h in val], 'o-', label='validation')
    ax.set(xlabel='epoch', ylabel='cross-entropy loss', yscale='log')
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(ax.figure, path)

def main(argv=None):
    args = parse_args(argv)  # the flags (at the end of the file); args.device: cuda, mps or cpu
    out, ckpt_path = Path(args.out_dir), Path(args.out_dir) / 'classifier.pt'

    # the data: decoded and checked on the host, then copied to the device once
    x_train, y_train, x_val, y_val = load_mnist(args.data_dir)   # (60000, 32, 32), (60000,), ...
    if args.compare_blog_loop:  # the blog's loop takes the data from the host
        return compare_loops(x_train, y_train, args)
    x_train, x_val = x_train[:, None].to(args.device), x_val[:, None].to(args.device)
    y_train, y_val = y_train.to(args.device), y_val.to(args.device)   # x: (N, 1, 32, 32)

    # the model; channels_last memory (NHWC: a pixel's channels side by side) is faster on a CPU
    torch.manual_seed(args.seed)
    model = Classifier().to(args.device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, args.lr)
    config = {**vars(args), 'optimizer': type(optimizer).__name__}   # what the checkpoint records
    print(f'network: {summary(model)} | optimizer: {config["optimizer"]}')
    history = resume(ckpt_path, model, optimizer, config) if args.resume else []   # []: a new run

    # train, writing the checkpoint every epoch; then the accuracy on the 10,000 test images
    t0, start = time.perf_counter(), len(history)
    train(model, optimizer, x_train, y_train, x_val, y_val, args.epochs, args.batch_size,
          args.log_every, history, ckpt_path, config)
    median = statistics.median(h['seconds'] for h in history[start:])   # s per epoch
    print(f'trained {args.epochs - start} epochs in {time.perf_counter() - t0:.0f} s on '
          f'{args.device} | median {median:.2f} s/epoch ({len(x_train) / median / 1e3:.1f}k img/s)')
    _, acc = evaluate(model, x_val, y_val)
    print(f'Model accuracy: {100 * acc:.2f}%')
    plot_loss(history, out / 'loss.png')
    print(f'wrote {ckpt_path} (classifier {classifier_id(model)}, the name fid.py gives its '
          f'numbers) and {out / "loss.png"}')

# -----------------------------------------------------------------------------
# beyond the blog: the blog's epoch made faster, which train() runs, and what that buys, measured

def train_epoch(model, optimizer, x, y, batch_size):
    """blog_epoch made faster, the loop train() runs: the same steps, but x (N, 1, 32, 32) and
    y (N,) are on the device already (no copy per step), and the loss is summed there and read
    once an epoch (no wait per step), weighted by batch size, so the mean is over images. On a
    CPU all the gain `--compare-blog-loop` measures comes from the model's channels-last memory
    (set in main): the copies and waits saved are meant for a GPU."""
    model.train()
    N = len(x)
    perm = torch.randperm(N, device=x.device)          # (N,) a new order every epoch
    loss_sum = torch.zeros((), device=x.device)
    for i in range(0, N, batch_size):
        idx = perm[i:i + batch_size]                   # (B,) the last batch may be smaller
        xb, yb = x[idx], y[idx]                        # (B, 1, 32, 32), (B,) gathered on the device
        logits = model(xb)                             # (B, 10)
        loss = F.cross_entropy(logits, yb)             # the mean over the batch
        optimizer.zero_grad(set_to_none=True)          # drop the last step's gradients
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(idx)           # no .item(): the device runs on
    return loss_sum / N                                # a 0-d tensor on the device

def compare_loops(x_train, y_train, args):
    """Alternate epochs of the blog's loop, it on a channels-last model, and ours; the medians."""
    torch.manual_seed(args.seed)
    x_dev, y_dev = x_train[:, None].to(args.device), y_train.to(args.device)
    times = {'blog': [], 'blog, channels-last': [], 'ours': []}
    for r in range(args.compare_blog_loop):
        for name in times:
            memory = torch.preserve_format if name == 'blog' else torch.channels_last
            model = Classifier().to(args.device, memory_format=memory)
            optimizer = make_optimizer(model, args.lr)
            t0 = time.perf_counter()
            if name == 'ours':
                train_epoch(model, optimizer, x_dev, y_dev, args.batch_size).item()
            else:
                blog_epoch(model, optimizer, x_train, y_train, args.batch_size, args.device)
            times[name].append(time.perf_counter() - t0)
            print(f'round {r + 1} | {name} loop | {times[name][-1]:.2f} s', flush=True)
    medians = {name: statistics.median(t) for name, t in times.items()}
    blog = medians['blog']
    print(f'median over {args.compare_blog_loop} epochs on {args.device}: ' + ' | '.join(
        f'{name} loop {m:.2f} s/epoch ({len(x_train) / m / 1000:.1f}k img/s, {blog / m:.2f}x)'
        for name, m in medians.items()))

# -----------------------------------------------------------------------------
# plumbing: a first reading can skip the rest of this file. The flags (the defaults are the
# blog's settings), checked and printed; the device picked, the output folder checked

def parse_args(argv):
    parser = argparse.ArgumentParser(description="Train the blog's MNIST classifier.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--data-dir', default='data', help='folder with (or for) the IDX files')
    parser.add_argument('--epochs', type=int, default=100, help='train up to this epoch')
    parser.add_argument('--batch-size', type=int, default=256, help='images per step')
    parser.add_argument('--lr', type=float, default=1e-3, help="the optimizer's learning rate")
    parser.add_argument('--seed', type=int, default=0, help='seed of the weights, order, dropout')
    parser.add_argument('--device', default='auto', help='auto: cuda, then mps, then cpu')
    parser.add_argument('--log-every', type=int, default=10, help="validate this often (i_log)")
    parser.add_argument('--out-dir', default='out', help='folder for classifier.pt and loss.png')
    parser.add_argument('--resume', action='store_true', help="go on from --out-dir's checkpoint")
    parser.add_argument('--compare-blog-loop', type=int, default=0, metavar='ROUNDS',
                        help="time ROUNDS epochs of the blog's loop and of ours, then exit")
    args = parser.parse_args(argv)
    if min(args.epochs, args.batch_size, args.log_every) < 1:
        parser.error('--epochs, --batch-size and --log-every must be at least 1')
    args.device = get_device(args.device)
    print(vars(args))
    check_writable(args.out_dir)
    return args

# the checkpoint: what it takes to evaluate the model, and to train on from it

def keep_previous(path):
    """Move the checkpoint at path, if any, to classifier.prev.pt beside it, saying so."""
    prev = path.with_name('classifier.prev.pt')
    if path.exists():
        print(f'kept {path} as {prev}' + (', replacing the one there' if prev.exists() else ''))
        path.replace(prev)

def save_checkpoint(path, model, optimizer, history, config):
    """Write the training state after history's last epoch to path, whole or not at all."""
    last = history[-1]
    cuda = config['device'].startswith('cuda')
    state = {'model': model.state_dict(), 'network': repr(model),   # its layers, as print(model)
             'optimizer': optimizer.state_dict(), 'config': config, 'history': history,
             'epoch': last['epoch'], 'val_loss': last['val_loss'], 'val_acc': last['val_acc'],
             # the random states of the permutations and dropout masks to come
             'rng': torch.get_rng_state(), 'cuda_rng': torch.cuda.get_rng_state() if cuda else None,
             'made_by': f'python train.py, PyTorch {torch.__version__}, {config["device"]}'}
    write_atomic(path, lambda tmp: torch.save(state, tmp))

def resume(path, model, optimizer, config):
    """Load path's checkpoint into model, optimizer and the random generators; its history."""
    _, ckpt = load_classifier(path)  # none, or one of another network: one line
    # what changes what is learned must stay; --epochs only says where to stop
    old = ckpt['config']
    diff = [f'{k} {old.get(k)} (now {config[k]})'
            for k in ('batch_size', 'lr', 'seed', 'optimizer') if old.get(k) != config[k]]
    if diff:
        raise ValueError(f'--resume: {path} was trained with {", ".join(diff)}; keep these '
                         f'(--epochs may change), or train anew in another --out-dir')
    if ckpt['epoch'] >= config['epochs']:
        raise ValueError(f'--resume: {path} holds epoch {ckpt["epoch"]} already; ask for more, '
                         f'e.g. --epochs {ckpt["epoch"] + 50}')
    model.load_state_dict(ckpt['model'])
    optimizer.load_state_dict(ckpt['optimizer'])
    torch.set_rng_state(ckpt['rng'])
    if ckpt['cuda_rng'] is not None and config['device'].startswith('cuda'):
        torch.cuda.set_rng_state(ckpt['cuda_rng'])
    print(f'resuming {path} after epoch {ckpt["epoch"]}')
    return ckpt['history']

if __name__ == '__main__':
    run_script(main, interrupted='; the checkpoint holds the last epoch printed above: to go '
                                 'on, add --resume to the same command')
