"""The training block every task config writes out (numbers here, not in dataclass defaults).

Every field below is checked against its dataclass when the run starts
(`hgrad.core.config.to_dataclass`): a typo'd override fails with the field's name.
"""

import ml_collections


def training(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """seed, workers, beta0, network, loss, inner, outer and schedule: the base every variant edits."""
  config.seed = 0
  config.num_workers = -1          # render worker processes; -1 = one per core
  # Where renders run (hgrad.core.bridge.RenderConfig): "local" worker processes or "ray"
  # actors (address "" = a local Ray for the run, or a cluster's); overlap = the perturbed
  # renders run while the unroll computes.
  config.render = ml_collections.ConfigDict(dict(backend="local", address="", overlap=True))
  # Several JAX processes on one run (hgrad.core.distributed): process 0's host:port, the
  # count and this process's id; 1 process initializes nothing.
  config.distributed = ml_collections.ConfigDict(dict(
      coordinator_address="", num_processes=1, process_id=0))
  config.beta0 = ()                # starting beta (a tuple, so --config.beta0="(...)" works); empty = the layout's default
  # Stacked hourglass (hgrad.tasks.network): 241,928 parameters at 1 input channel.
  config.network = ml_collections.ConfigDict(dict(
      width=24, stacks=2, depth=3, blocks=1, in_channels=1, residual_init_scale=0.1))
  # What the network is trained on (hgrad.tasks.losses.LossConfig).
  config.loss = ml_collections.ConfigDict(dict(
      normal_weight=1.0, depth_weight=0.0, depth_loss="scale_invariant"))
  # K inner steps of B samples (SGD with momentum 0.9 here; the cpu variants use Adam, b1).
  config.inner = ml_collections.ConfigDict(dict(
      steps=8, batch_size=8, optimizer="sgd", learning_rate=0.02, lr_decay_steps=0,
      lr_final_fraction=0.1, momentum=0.9, nesterov=False, b1=0.9, remat=True,
      ema_decay=0.0))               # > 0: L and the delivered network use an EMA of the weights
  # Hybrid gradient on unit-box coordinates: m antithetic pairs, RMSprop.
  config.outer = ml_collections.ConfigDict(dict(
      num_perturbations=4, sigma=0.05, learning_rate=0.02, estimator="hybrid",
      directions="gaussian", optimizer="rmsprop", rmsprop_decay=0.9, rmsprop_eps=1e-8,
      momentum=0.0, coordinates="unit",
      frozen=(),            # name patterns beta keeps at beta0
      trust_radius=0.0))    # > 0: beta's u stays within this L2 distance of beta0's
  # How the network is scored (hgrad.tasks.common.EvalConfig): flip = mirrored-image averaging.
  config.evaluation = ml_collections.ConfigDict(dict(flip=False))
  # Global steps (hgrad.core.loop.Schedule): warm-up, outer steps (each followed by
  # train_steps_per_outer plain steps), final plain steps.
  config.schedule = ml_collections.ConfigDict(dict(
      warmup_steps=0, outer_steps=10, train_steps_per_outer=0, final_steps=0,
      checkpoint_every=10, eval_every=10, time_budget_s=0.0, freeze_beta=False,
      stop_after_step=-1, log_every=1))
  return config


def smoke(config: ml_collections.ConfigDict) -> None:
  """Tiny sizes: a whole run in well under a minute on 2 CPU cores."""
  config.num_workers = 0
  config.network.update(width=8, stacks=1, depth=2)
  config.inner.update(steps=2, batch_size=4)
  config.outer.update(num_perturbations=2)
  config.schedule.update(warmup_steps=2, outer_steps=4, train_steps_per_outer=1, final_steps=0,
                         checkpoint_every=3, eval_every=2)
