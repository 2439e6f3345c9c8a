"""AdamW with warmup and decay, global-norm clipping, and an optional skip of non-finite updates."""
import jax
import optax

# Weight decay applies to matrices (Linear kernels, embedding tables); biases,
# LayerNorm parameters, positions and mask tokens are left alone, as in MAE.
_DECAYED_LEAVES = ("kernel", "embedding")


def learning_rate_schedule(optim, num_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `optim.lr`, then cosine or linear decay to 0, or constant."""
    warmup = optax.linear_schedule(0.0, optim.lr, optim.warmup_steps)
    decay_steps = max(num_steps - optim.warmup_steps, 1)
    decay = {
        "cosine": optax.cosine_decay_schedule(optim.lr, decay_steps),
        "linear": optax.linear_schedule(optim.lr, 0.0, decay_steps),
        "constant": optax.constant_schedule(optim.lr),
    }[optim.schedule]
    return optax.join_schedules([warmup, decay], [optim.warmup_steps])


def decay_mask(params):
    """True for the leaves that get weight decay."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) in _DECAYED_LEAVES, params)


def make_optimizer(config) -> optax.GradientTransformation:
    """The optimizer of `config.optim`, with clipping and `train.on_nonfinite='skip'` applied."""
    optim = config.optim
    tx = optax.adamw(
        learning_rate_schedule(optim, config.train.num_steps), b1=optim.b1, b2=optim.b2,
        weight_decay=optim.weight_decay, mask=decay_mask)
    if optim.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip), tx)
    if config.train.on_nonfinite == "skip":
        # A step whose gradients hold NaN or Inf leaves parameters and moments as they were.
        tx = optax.apply_if_finite(tx, max_consecutive_errors=1_000_000)
    return tx
