"""Device mesh and logical-axis partitioning (T5X `standard_logical_axis_rules` style).

The model names only logical axes (batch, length, embed, mlp, heads, kv, joined_kv, vocab,
relpos_buckets); the single rules table built here maps them to mesh axes:

  'replica' (optional)  pure data parallelism across groups (e.g. TPU slices / GPU nodes): the batch
                        is split, parameters are replicated.
  'data'                data parallelism; with `fsdp=True` parameters and optimizer state are also
                        sharded over it (ZeRO-3 / T5X parameter_partitioning_dims=2).
  'model'               tensor (model) parallelism of heads, mlp and vocab (`num_partitions`).

One device is a valid mesh (1x1). With several processes (hosts) every process feeds its own slice
of the global batch and `shard_batch` assembles the global array without any host-to-host copy.
"""

import contextlib
import dataclasses
import logging
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from t2t_jax.errors import UserInputError

log = logging.getLogger(__name__)
LogicalRules = Sequence[tuple[str, Any]]


def standard_logical_axis_rules(*, fsdp: bool = False, replica_axis: bool = False) -> LogicalRules:
  """T5X standard rules (activation_partitioning_dims=1; parameter_partitioning_dims=1, or 2 = FSDP).

  Flax resolves a logical axis with the first rule whose mesh axis is still free in that array, so
  with FSDP `embed` lands on 'data' in parameters but stays unsharded in activations, whose 'batch'
  already took 'data'.
  """
  batch = ("replica", "data") if replica_axis else "data"
  rules = [
      ("batch", batch),
      ("vocab", "model"),
      ("mlp", "model"),
      ("heads", "model"),
      ("joined_kv", "model"),
      ("kv", None),
      ("length", None),
      ("relpos_buckets", None),
      ("layers", None),
      ("stack", None),
  ]
  if fsdp:
    rules.append(("embed", "data"))
  rules.append(("embed", None))
  return tuple(rules)


def create_mesh(num_partitions: int = 1, *, num_replicas: int = 1, devices=None) -> Mesh:
  """Mesh ('data', 'model') or, with num_replicas > 1, ('replica', 'data', 'model').

  Uses all devices of all processes unless `devices` is given. `num_partitions` is the size of the
  'model' axis; `num_replicas` the size of the outer 'replica' axis (across processes/slices when
  there are several, so slow links carry only gradient all-reduces).
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if num_partitions < 1 or n % num_partitions:
    raise UserInputError(f"num_partitions={num_partitions} does not divide the {n} devices")
  if num_replicas < 1 or (n // num_partitions) % num_replicas:
    raise UserInputError(f"num_replicas={num_replicas} does not divide the {n // num_partitions}-way "
                         f"data parallelism of {n} devices / num_partitions={num_partitions}")
  data = n // num_partitions // num_replicas
  # Order devices by (process, id) so a process's devices are contiguous along 'data'.
  devices = sorted(devices, key=lambda d: (d.process_index, d.id))
  if num_replicas > 1:
    grid = np.array(devices, dtype=object).reshape(num_replicas, data, num_partitions)
    names = ("replica", "data", "model")
  else:
    grid = _topology_grid(devices, data, num_partitions)
    names = ("data", "model")
  return Mesh(grid, names, axis_types=(AxisType.Auto,) * len(names))


def _topology_grid(devices, data: int, num_partitions: int) -> np.ndarray:
  """A (data, model) device grid following the physical topology (TPU/GPU interconnect).

  CPU devices have no topology: a plain reshape, silently.  On accelerators, when
  `mesh_utils.create_device_mesh` cannot map the mesh onto the topology (e.g. a device subset),
  the plain reshape is used with a warning naming why: collectives may then cross slow links.
  """
  if all(d.platform == "cpu" for d in devices):
    return np.array(devices, dtype=object).reshape(data, num_partitions)
  from jax.experimental import mesh_utils  # pylint: disable=import-outside-toplevel
  try:
    return mesh_utils.create_device_mesh((data, num_partitions), devices=devices,
                                         allow_split_physical_axes=True)
  except Exception as e:  # pylint: disable=broad-except  (mesh_utils raises several types)
    log.warning("device mesh (data=%d, model=%d) over %d %s devices ignores the physical topology: "
                "mesh_utils.create_device_mesh failed (%s: %s); collectives may be slower",
                data, num_partitions, len(devices), devices[0].platform, type(e).__name__, e)
    return np.array(devices, dtype=object).reshape(data, num_partitions)


@dataclasses.dataclass
class Partitioner:
  """Owns the mesh and the logical rules; turns logical annotations into shardings.

  Attributes:
    num_partitions: size of the 'model' axis (tensor parallelism).
    num_replicas: size of the optional outer 'replica' axis (1 = no such axis).
    fsdp: shard parameters and optimizer state over 'data' as well.
    logical_axis_rules: override the standard table.
    activation_constraints: apply the rules to activations inside the model (off = let XLA propagate).
    devices: the devices of the mesh (default: all of every process).
    num_devices: the first n local devices (single-process runs: studies, tests).
  """
  num_partitions: int = 1
  num_replicas: int = 1
  fsdp: bool = False
  logical_axis_rules: LogicalRules | None = None
  activation_constraints: bool = True
  devices: Any = None
  num_devices: int | None = None

  def __post_init__(self):
    if self.num_devices is not None:
      n = jax.local_device_count()
      if isinstance(self.num_devices, bool) or not isinstance(self.num_devices, int) \
          or not 1 <= self.num_devices <= n:
        raise UserInputError(f"num_devices={self.num_devices!r}: need an integer in 1..{n}")
      self.devices = jax.local_devices()[:self.num_devices]
    self.mesh = create_mesh(self.num_partitions, num_replicas=self.num_replicas,
                            devices=self.devices)
    if self.logical_axis_rules is None:
      self.logical_axis_rules = standard_logical_axis_rules(fsdp=self.fsdp,
                                                            replica_axis=self.num_replicas > 1)
    self.logical_axis_rules = tuple(tuple(r) for r in self.logical_axis_rules)

  # ------------------------------------------------------------------------------- batch axes

  @property
  def batch_axes(self):
    return ("replica", "data") if "replica" in self.mesh.axis_names else ("data",)

  @property
  def data_parallel_size(self) -> int:
    return int(np.prod([self.mesh.shape[a] for a in self.batch_axes]))

  def data_sharding(self, ndim: int = 2) -> NamedSharding:
    """Sharding of a batch array: leading dim over the batch axes, the rest replicated."""
    return NamedSharding(self.mesh, P(self.batch_axes, *([None] * (ndim - 1))))

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  def host_shard(self) -> tuple[int, int]:
    """(shard_index, num_shards) of the data this process must read.

    Processes whose devices hold the same batch rows (model parallelism across hosts) read the same
    shard; this is the index of this process's first batch row among the global rows.
    """
    n = jax.process_count()
    if n == 1:
      return 0, 1
    dp = self.data_parallel_size
    # Which global-batch slices (of dp) do this process's devices hold?
    sharding = self.data_sharding(1)
    index_map = sharding.addressable_devices_indices_map((dp,))
    slices = sorted({idx[0].start or 0 for idx in index_map.values()})
    per_process = len(slices)
    if dp % per_process:
      raise UserInputError(f"data parallelism {dp} does not split evenly over {n} processes")
    return slices[0] // per_process, dp // per_process

  def check_batch_size(self, batch_size: int, num_microbatches: int = 1) -> None:
    """Global batch must split over the data-parallel devices (and microbatches)."""
    dp = self.data_parallel_size
    if batch_size % (dp * num_microbatches):
      raise UserInputError(
          f"BATCH_SIZE={batch_size} must be a multiple of data-parallel devices ({dp}) x "
          f"num_microbatches ({num_microbatches})")

  def shard_batch(self, batch: dict[str, np.ndarray], global_batch_size: int | None = None):
    """Assembles this process's numpy batch into global jax.Arrays sharded over the batch axes.

    `global_batch_size` counts the features with the most rows (examples); a feature with fewer
    rows (the prompts of a multi-target batch) scales with them.
    """
    out = {}
    most = max((np.shape(v)[0] for v in batch.values()), default=0)
    for k, v in batch.items():
      v = np.asarray(v)
      global_shape = None
      if global_batch_size is not None:
        global_shape = (global_batch_size * v.shape[0] // most,) + v.shape[1:]
      out[k] = jax.make_array_from_process_local_data(self.data_sharding(v.ndim), v, global_shape)
    return out

  # ------------------------------------------------------------------------------ parameters

  def logical_to_mesh(self, logical_spec_tree):
    """PartitionSpecs of logical names -> NamedShardings on this mesh."""
    return nn.logical_to_mesh_sharding(logical_spec_tree, self.mesh, self.logical_axis_rules)

  def shardings_of(self, boxed_tree):
    """NamedShardings for a (possibly abstract) tree whose leaves may be nn.Partitioned.

    UserInputError when a mesh split does not divide the axis it splits (e.g. NUM_PARTITIONS=8 over a
    model with 4 heads), naming the parameter, instead of jax's IndivisibleError at the first use."""
    specs = nn.get_partition_spec(boxed_tree)
    shardings = self.logical_to_mesh(specs)
    flat_shapes = jax.tree_util.tree_flatten_with_path(nn.unbox(boxed_tree))[0]
    flat_specs = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P))
    for (path, leaf), sharding, logical in zip(flat_shapes, jax.tree.leaves(shardings), flat_specs):
      shape = getattr(leaf, "shape", None)
      if shape is None or not isinstance(sharding, NamedSharding):
        continue
      for i, (dim, axes) in enumerate(zip(shape, sharding.spec)):
        axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        ways = int(np.prod([self.mesh.shape[a] for a in axes]))
        if dim % ways:
          name = logical[i] if i < len(logical) else None
          raise UserInputError(
              f"parameter {jax.tree_util.keystr(path)} of shape {tuple(shape)}: its axis {i} "
              f"({name!r}, {dim}) would be split {ways} ways over mesh axes {axes} "
              f"({self.describe()}); use a NUM_PARTITIONS / FSDP / NUM_REPLICAS layout that divides it")
    return shardings

  @contextlib.contextmanager
  def activation_context(self):
    """Mesh + rules context under which the model's logical activation constraints apply."""
    rules = self.logical_axis_rules if self.activation_constraints else ()
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(rules):
      yield

  def describe(self) -> str:
    shape = " x ".join(f"{a}={s}" for a, s in self.mesh.shape.items())
    return f"mesh {shape} ({jax.process_count()} process(es)), fsdp={self.fsdp}"


@dataclasses.dataclass
class PjitPartitioner(Partitioner):
  """`Partitioner` under T5X's name: the one runs/finetune.gin builds, so T5X bindings such as
  `--gin.partitioning.PjitPartitioner.num_partitions=2` work unchanged."""
