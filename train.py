"""
Train the blog's MNIST classifier with a hand-written loop, as the "Training" section of the
blog post "Latent Diffusion Series: MNIST Classifier" (Nick Tasios) does: Adam, cross-entropy,
a new permutation every epoch, the test set as the validation set, and the post's settings as
the flags' defaults: --lr 1e-3, --batch-size 256, --epochs 100, --log-every 10 (its i_log).

    python train.py                        # 100 epochs, as in the blog (device: auto)
    python train.py --device cpu --epochs 10
    python train.py --resume --epochs 150  # continue out/classifier.pt up to epoch 150
    python train.py --compare-blog-loop 3  # time the loop as the post runs it and as we do

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
    """The blog's optimizer, Adam. train.py makes it only here, so trying another is one line
    and its --lr: torch.optim.SGD(model.parameters(), lr, momentum=0.9) with --lr 0.05."""
    return torch.optim.Adam(model.parameters(), lr=lr)

def train_epoch(model, optimizer, x_train, y_train, batch_size, device):
    """One epoch, as the blog's inner loop writes it: a new order of the images x_train (N, 32, 32)
    and digits y_train (N,), then for each batch: to the device, forward, loss, zero_grad,
    backward, step. Returns the mean of the batch losses. The data may be on the host, as in
    the blog, or on the device already (main puts it there: then .to(device) does nothing)."""
    model.train()
    num_batches = math.ceil(len(x_train) / batch_size)
    train_ids = torch.randperm(len(x_train))
    average_loss = 0.0
    for bid in range(num_batches):
        batch_ids = train_ids[bid * batch_size:(bid + 1) * batch_size]   # the last may be smaller
        x = x_train[batch_ids, None].to(device)       # (B, 1, 32, 32)
        y = y_train[batch_ids].to(device)             # (B,)
        loss = F.cross_entropy(model(x), y)           # model(x): logits (B, 10)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        average_loss += loss.item()
    return average_loss / num_batches

@torch.no_grad()
def evaluate(model, x, y):
    """The mean cross-entropy and the accuracy of model on images x (N, 32, 32) and digits
    y (N,), in eval mode (no dropout): as in the blog, all images in one pass."""
    model.eval()
    logits = model(x[:, None])                         # (N, 1, 32, 32) -> (N, 10)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).sum().item() / len(y)

def train(model, optimizer, x_train, y_train, x_val, y_val, args, history):
    """The blog's outer loop: train_epoch up to epoch args.epochs, the validation every
    args.log_every epochs (the blog's i_log; epochs count from 1, as its (i + 1) % i_log) and at
    the last. Then ours: the checkpoint args.out_dir/classifier.pt after each epoch; it changes
    nothing that is learned. history: a dict per epoch done ([] for a new run, or resume()'s)."""
    ckpt_path = Path(args.out_dir) / 'classifier.pt'
    for epoch in range(len(history) + 1, args.epochs + 1):
        # one pass over the training set, then the validation every log_every epochs and the last
        t0 = time.perf_counter()
        train_loss = train_epoch(model, optimizer, x_train, y_train, args.batch_size, args.device)
        dt = time.perf_counter() - t0
        line = f'epoch {epoch:3d} | train loss {train_loss:.4f}'
        val_loss = val_acc = None
        if epoch % args.log_every == 0 or epoch == args.epochs:
            val_loss, val_acc = evaluate(model, x_val, y_val)
            line += f' | val loss {val_loss:.4f} | val acc {100 * val_acc:.2f}%'
        history.append(dict(epoch=epoch, train_loss=train_loss, val_loss=val_loss,
                            val_acc=val_acc, seconds=dt))

        # the checkpoint. A NaN or infinite loss has ruined the weights: stop, the last good
        # epoch kept on disk. Else save; a new run first moves the last run's to classifier.prev.pt
        if not math.isfinite(train_loss):
            kept = f'{ckpt_path} holds epoch {epoch - 1}' if epoch > 1 else 'nothing was saved'
            raise FloatingPointError(f'the train loss became {train_loss} at epoch {epoch}: '
                                     f'training stopped, {kept}; try a smaller --lr')
        if epoch == 1:
            keep_previous(ckpt_path)
        save_checkpoint(ckpt_path, model, optimizer, history, args)
        print(f'{line} | {dt:.2f} s | {len(x_train) / dt / 1000:.1f}k img/s', flush=True)
    return history

def plot_loss(history, path):
    """The blog's loss figure: the train loss (of every epoch) and validation loss by epoch."""
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
    if args.compare_blog_loop:  # beyond the blog: time the loop as the post runs it and as we do
        return compare_loops(args)
    out = Path(args.out_dir)

    # the data. The post keeps it on the host and copies each batch to the device; we copy it
    # there once, so that on a GPU each batch's .to(device) in train_epoch costs nothing
    x_train, y_train, x_val, y_val = load_mnist(args.data_dir)   # (60000, 32, 32), (60000,), ...
    x_train, y_train = x_train.to(args.device), y_train.to(args.device)
    x_val, y_val = x_val.to(args.device), y_val.to(args.device)  # (10000, 32, 32), (10000,)

    # the model. channels_last memory (NHWC: a pixel's channels side by side) is faster on a CPU;
    # its input may stay as it is (NCHW), PyTorch converts it
    torch.manual_seed(args.seed)
    model = Classifier().to(args.device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, args.lr)
    print(f'network: {summary(model)} | optimizer: {type(optimizer).__name__}')  # see model.summary
    history = resume(model, optimizer, args) if args.resume else []   # the epochs done already

    # train, saving the checkpoint every epoch; then the blog's accuracy on the 10,000 test images
    t0, start = time.perf_counter(), len(history)
    train(model, optimizer, x_train, y_train, x_val, y_val, args, history)
    median = statistics.median(h['seconds'] for h in history[start:])   # s per epoch
    print(f'trained {args.epochs - start} epochs in {time.perf_counter() - t0:.0f} s on '
          f'{args.device} | median {median:.2f} s/epoch ({len(x_train) / median / 1e3:.1f}k img/s)')
    _, acc = evaluate(model, x_val, y_val)     # the last epoch's val acc, printed as the post does
    print(f'Model accuracy: {100 * acc:.2f}%')
    plot_loss(history, out / 'loss.png')
    print(f'wrote {out / "classifier.pt"} (classifier {classifier_id(model)}, the name fid.py '
          f'gives its numbers) and {out / "loss.png"}')

# -----------------------------------------------------------------------------
# beyond the blog: what main() changes in how the post runs its loop buys, measured

def compare_loops(args):
    """Alternate epochs of train_epoch as the post runs it (the data on the host, the default
    memory layout) and as main() does (the data on the device, a channels-last model)."""
    x_train, y_train, _, _ = load_mnist(args.data_dir)
    torch.manual_seed(args.seed)
    runs = {'blog': (x_train, y_train, torch.preserve_format),
            'ours': (x_train.to(args.device), y_train.to(args.device), torch.channels_last)}
    times = {name: [] for name in runs}
    for r in range(args.compare_blog_loop):
        for name, (x, y, memory) in runs.items():
            model = Classifier().to(args.device, memory_format=memory)
            optimizer = make_optimizer(model, args.lr)
            t0 = time.perf_counter()
            train_epoch(model, optimizer, x, y, args.batch_size, args.device)
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
                        help='time ROUNDS epochs of the loop as the post runs it and as we do')
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

def run_config(args, optimizer):
    """What a checkpoint records of how it was trained: the flags and the optimizer's name."""
    return {**vars(args), 'optimizer': type(optimizer).__name__}

def save_checkpoint(path, model, optimizer, history, args):
    """Write the training state after history's last epoch to path, whole or not at all."""
    last, config = history[-1], run_config(args, optimizer)
    cuda = config['device'].startswith('cuda')
    state = {'model': model.state_dict(), 'network': repr(model),   # its layers, as print(model)
             'optimizer': optimizer.state_dict(), 'config': config, 'history': history,
             'epoch': last['epoch'], 'val_loss': last['val_loss'], 'val_acc': last['val_acc'],
             # the random states of the permutations and dropout masks to come
             'rng': torch.get_rng_state(), 'cuda_rng': torch.cuda.get_rng_state() if cuda else None,
             'made_by': f'python train.py, PyTorch {torch.__version__}, {config["device"]}'}
    write_atomic(path, lambda tmp: torch.save(state, tmp))

def resume(model, optimizer, args):
    """Load --out-dir's checkpoint into model, optimizer and the random generators; its history."""
    path, config = Path(args.out_dir) / 'classifier.pt', run_config(args, optimizer)
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
