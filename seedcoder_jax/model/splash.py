"""TPU splash attention (Pallas) for packed, causal, grouped-query self-attention.

`splash_attention` computes the same function as `attention.xla_attention` with the mask "same
segment id and key index <= query index" (segment 0 is padding and, like every id, attends only to
itself), using JAX's sparse flash attention kernel
(`jax.experimental.pallas.ops.tpu.splash_attention`):

- the static causal mask is a `CausalMask`, so blocks above the diagonal are skipped, not masked;
- packed documents are `SegmentIds` (the kernel masks across segments inside each block);
- GQA is native: with H query heads and K kv heads the kernel reads kv head h // (H / K) for query
  head h (MaxText does the same), so k and v are never repeated on one device;
- gradients come from the kernel's custom VJP (separate dq and dkv kernels by default, or one fused
  backward kernel with `use_fused_bwd_kernel=True`).

The kernel works on one example [H, T, Dh], so the batch is vmapped. Pallas kernels cannot be
partitioned by XLA's SPMD partitioner, so under an active mesh the call is wrapped in `shard_map`:
batch over ("data", "fsdp"), heads over "tensor", sequence and head_dim whole (the kernel cannot
shard the kv sequence). Each shard builds its kernel for its own head count; the causal mask is the
same for every head and every batch shard, so no mask metadata has to be partitioned.

Off TPU the kernel runs in Pallas interpret mode (`interpret=True`: the kernel body is evaluated as
ordinary XLA ops, block by block). That is orders of magnitude slower than the real kernel and only
meant for tests on CPU; a warning is logged once when it is chosen automatically.

Assumes self-attention over whole sequences: q and kv have the same length and their indices are
0..T-1 (what the decoder passes); it is a training/prefill kernel, not a KV-cache decode kernel.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as pallas_splash
from jax.sharding import PartitionSpec as P

BlockSizes = pallas_splash.BlockSizes

# The kernel tiles the kv sequence in lanes of 128 and, with segment ids, the q sequence too (the
# dkv kernel puts q in lanes): every block is a multiple of 128, the sequence is padded to one.
LANES = 128
# MaxText's default splash block (sa_block_* = 512): large enough to amortise the per-block
# overhead, small enough that one block's q, k, v and float32 accumulators fit VMEM.
DEFAULT_MAX_BLOCK = 512
BATCH_AXES = ("data", "fsdp")
HEAD_AXIS = "tensor"

_log = logging.getLogger(__name__)


def default_block_sizes(seq_len: int, *, max_block: int = DEFAULT_MAX_BLOCK,
                        use_fused_bwd_kernel: bool = False) -> BlockSizes:
  """The largest multiple of 128 that divides `seq_len` and is <= `max_block`, for every block.

  `seq_len` must be a multiple of 128 (`splash_attention` pads to one before calling this).
  """
  if seq_len <= 0 or seq_len % LANES:
    raise ValueError(f"splash attention needs a sequence length that is a positive multiple of "
                     f"{LANES}, got {seq_len}")
  if max_block < LANES or max_block % LANES:
    raise ValueError(f"max_block must be a positive multiple of {LANES}, got {max_block}")
  block = next(b for b in range(min(max_block, seq_len), 0, -LANES) if seq_len % b == 0)
  backward = dict(block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block)
  if not use_fused_bwd_kernel:
    backward.update(block_q_dq=block, block_kv_dq=block)
  return BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                    use_fused_bwd_kernel=use_fused_bwd_kernel, **backward)


def _check_block_sizes(block_sizes: BlockSizes, seq_len: int) -> None:
  if not block_sizes.has_backward_blocks:
    raise ValueError(f"splash block sizes must include the backward blocks (block_q_dkv, "
                     f"block_kv_dkv, and block_q_dq/block_kv_dq unless fused): {block_sizes}")
  names = ("block_q", "block_kv", "block_kv_compute", "block_q_dkv", "block_kv_dkv",
           "block_kv_dkv_compute", "block_q_dq", "block_kv_dq")
  bad = {n: getattr(block_sizes, n) for n in names if getattr(block_sizes, n) is not None
         and (getattr(block_sizes, n) % LANES or seq_len % getattr(block_sizes, n))}
  if bad:
    raise ValueError(f"splash block sizes must be multiples of {LANES} that divide the (padded) "
                     f"sequence length {seq_len}; these do not: {bad}")


def _make_kernel(n_heads: int, seq_len: int, block_sizes: BlockSizes, interpret: bool):
  """A causal GQA splash kernel for one example [n_heads, seq_len, Dh].

  Built inside the trace, so its block-sparse metadata (numpy, converted by the kernel with
  jnp.array) become constants of the traced program: nothing is placed on a device, which is what
  ahead-of-time compilation for a TPU topology needs (its devices are compile-only). The masks
  are hashable and the library caches their numpy processing, so retracing stays cheap.
  head_shards = q_seq_shards = 1: under shard_map each shard builds its own kernel for its local
  heads, so the metadata never need partitioning.
  """
  mask = pallas_splash.MultiHeadMask([pallas_splash.CausalMask((seq_len, seq_len))] * n_heads)
  return pallas_splash.make_splash_mha(mask, block_sizes=block_sizes, head_shards=1,
                                       q_seq_shards=1, interpret=interpret)


_target_platform: str | None = None


@contextlib.contextmanager
def target_platform(platform: str):
  """Builds the kernel for `platform` rather than the default backend: ahead-of-time compilation
  for a TPU topology runs on a CPU host, and a trace inside jit cannot see the mesh's devices.
  (A module global, not a context variable: the tracing may happen on another thread.)"""
  global _target_platform
  previous, _target_platform = _target_platform, platform
  try:
    yield
  finally:
    _target_platform = previous


def _platform() -> str:
  return _target_platform or jax.default_backend()


@functools.lru_cache(maxsize=None)
def _warn_interpret(backend: str) -> None:
  _log.warning("splash attention on backend %r runs in Pallas interpret mode: correct but very "
               "slow, meant for tests; use attention_impl='xla' or 'cudnn' off TPU", backend)


def _local_attention(q_BHTD, k_BKTD, v_BKTD, q_segment_ids_BT, kv_segment_ids_BT, *, block_sizes,
                     interpret):
  """The kernel over a (local) batch: vmap of the per-example kernel."""
  kernel = _make_kernel(q_BHTD.shape[1], q_BHTD.shape[2], block_sizes, interpret)

  def one_example(q_HTD, k_KTD, v_KTD, q_seg_T, kv_seg_T):
    return kernel(q_HTD, k_KTD, v_KTD, segment_ids=pallas_splash.SegmentIds(q_seg_T, kv_seg_T))

  return jax.vmap(one_example)(q_BHTD, k_BKTD, v_BKTD, q_segment_ids_BT, kv_segment_ids_BT)


def _mesh_axes(mesh, batch: int, n_heads: int):
  """(batch axes, head axis or None, all axes to make manual) for shard_map on `mesh`."""
  free = [a for a in mesh.axis_names if a not in mesh.manual_axes]
  batch_axes = tuple(a for a in BATCH_AXES if a in free)
  n_batch = math.prod(mesh.shape[a] for a in batch_axes)
  if batch % n_batch:
    raise ValueError(f"splash attention shards the batch over mesh axes {batch_axes} "
                     f"({n_batch} devices), which do not divide the batch size {batch}")
  head_axis = HEAD_AXIS if HEAD_AXIS in free else None
  if head_axis and n_heads % mesh.shape[head_axis]:
    raise ValueError(f"splash attention shards heads over mesh axis {head_axis!r} of size "
                     f"{mesh.shape[head_axis]}, which does not divide the {n_heads} query heads")
  return batch_axes, head_axis, tuple(free)


def splash_attention(q_BTHD, k_BSKD, v_BSKD, q_segment_ids_BT, kv_segment_ids_BS, *,
                     block_sizes: BlockSizes | None = None, max_block: int = DEFAULT_MAX_BLOCK,
                     interpret: bool | None = None):
  """Causal, segment-masked GQA attention [B, T, H, Dh] -> [B, T, H, Dh] with the splash kernel.

  Args:
    q_BTHD, k_BSKD, v_BSKD: queries, keys, values (float32 or bfloat16; same dtype), T == S.
    q_segment_ids_BT, kv_segment_ids_BS: int segment ids (0 = padding).
    block_sizes: the kernel's tiles; by default `default_block_sizes(padded T, max_block)`. They
      must be multiples of 128 dividing T rounded up to a multiple of 128.
    max_block: the largest default block (ignored when `block_sizes` is given).
    interpret: run the kernel in Pallas interpret mode; None means "when the backend is not TPU".
  """
  b, t, h, d = q_BTHD.shape
  _, s, n_kv, _ = k_BSKD.shape
  if t != s:
    raise ValueError(f"splash attention here is causal self-attention: query length {t} must "
                     f"equal key length {s}")
  if k_BSKD.shape != v_BSKD.shape or k_BSKD.shape[0] != b or k_BSKD.shape[3] != d:
    raise ValueError(f"key {k_BSKD.shape} and value {v_BSKD.shape} must be [B, S, K, Dh] with "
                     f"query {q_BTHD.shape}")
  if h % n_kv:
    raise ValueError(f"query heads {h} are not a multiple of kv heads {n_kv}")
  if not (q_BTHD.dtype == k_BSKD.dtype == v_BSKD.dtype):
    raise ValueError(f"q, k, v must share a dtype, got {q_BTHD.dtype}, {k_BSKD.dtype}, "
                     f"{v_BSKD.dtype}")
  if q_segment_ids_BT.shape != (b, t) or kv_segment_ids_BS.shape != (b, s):
    raise ValueError(f"segment ids must be [B, T] = {(b, t)}, got {q_segment_ids_BT.shape} and "
                     f"{kv_segment_ids_BS.shape}")
  if interpret is None:
    platform = _platform()
    interpret = platform != "tpu"
    if interpret:
      _warn_interpret(platform)

  # Pad the sequence to a multiple of 128 with segment id 0 at the end. Exact for the real rows:
  # causality stops them from seeing anything after them, and every padded query still sees
  # itself, so no softmax row is empty. The padded rows are sliced off.
  t_pad = -(-t // LANES) * LANES
  if block_sizes is None:
    block_sizes = default_block_sizes(t_pad, max_block=max_block)
  _check_block_sizes(block_sizes, t_pad)

  # The kernel does not scale the logits: fold 1/sqrt(Dh) into q (in float32, then back to the
  # compute dtype, as MaxText does). Its VJP then carries the scale into dq.
  q_BTHD = (q_BTHD.astype(jnp.float32) * (d ** -0.5)).astype(q_BTHD.dtype)
  q_seg_BT = q_segment_ids_BT.astype(jnp.int32)
  kv_seg_BT = kv_segment_ids_BS.astype(jnp.int32)
  if t_pad != t:
    pad = ((0, 0), (0, t_pad - t))
    q_seg_BT, kv_seg_BT = jnp.pad(q_seg_BT, pad), jnp.pad(kv_seg_BT, pad)
    q_BTHD, k_BSKD, v_BSKD = (jnp.pad(x, pad + ((0, 0), (0, 0))) for x in (q_BTHD, k_BSKD, v_BSKD))
  # The kernel's layout is heads-major: [B, H, T, Dh].
  q_BHTD = q_BTHD.transpose(0, 2, 1, 3)
  k_BKTD = k_BSKD.transpose(0, 2, 1, 3)
  v_BKTD = v_BSKD.transpose(0, 2, 1, 3)

  local = functools.partial(_local_attention, block_sizes=block_sizes, interpret=interpret)
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.are_all_axes_manual:
    out_BHTD = local(q_BHTD, k_BKTD, v_BKTD, q_seg_BT, kv_seg_BT)
  else:
    batch_axes, head_axis, manual = _mesh_axes(mesh, b, h)
    if head_axis and n_kv % mesh.shape[head_axis]:
      # Fewer kv heads than head shards: give every query head its own copy of its kv head
      # (repeat keeps the h -> h // (H/K) grouping; the gradient sums the copies back).
      k_BKTD = jnp.repeat(k_BKTD, h // n_kv, axis=1)
      v_BKTD = jnp.repeat(v_BKTD, h // n_kv, axis=1)
    heads = P(batch_axes or None, head_axis, None, None)
    seg = P(batch_axes or None, None)
    # check_vma=False: the kernel library's pallas_call out_shapes do not say how they vary over
    # manual axes, which check_vma=True demands (it raises); MaxText likewise turns the check off.
    out_BHTD = jax.shard_map(local, in_specs=(heads, heads, heads, seg, seg), out_specs=heads,
                             axis_names=set(manual), check_vma=False)(
                                 q_BHTD, k_BKTD, v_BKTD, q_seg_BT, kv_seg_BT)
  return out_BHTD.transpose(0, 2, 1, 3)[:, :t]
