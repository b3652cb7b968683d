"""Stage 3, deduplication: repository level, then exact and near duplicates at file level.

- Content hash: SHA-256 of the normalised text (newlines "\\r\\n"/"\\r" -> "\\n", trailing
  whitespace stripped from every line, trailing blank lines dropped), stored as `sha256`.
- Repository level (first, so that a copied repository goes as a whole rather than file by file):
  a repository is the set of its files' content hashes; repositories whose sets are near-identical
  (MinHash over the hashes, LSH, estimated Jaccard >= dedup.repo.threshold) form clusters, and
  every file of a non-kept repository is rejected "near_duplicate_repo".
- Exact: files with equal hashes; all but one rejected "exact_duplicate".
- Near: MinHash over word (or character) shingles, LSH banding, union-find clusters; all but one
  rejected "near_duplicate".

The kept copy is always the smallest id (repository name for repositories), so reruns and runners
agree; a rejection's detail names the kept id. Beam: GroupByKey on the hash / on LSH band keys;
the duplicate pairs' clusters resolved by large-star/small-star rounds over GroupByKeys
(`_cluster_labels`), and the records joined with their kept id by key: no worker and no driver
holds the list of pairs (the pure path below uses one union-find, with the same result).
"""

from __future__ import annotations

import dataclasses
import hashlib

from seedcoder_jax.curation import minhash, records

STAGE = "dedup"


@dataclasses.dataclass(frozen=True)
class DedupConfig:
  exact: bool = True
  near: bool = True
  repo: bool = True
  near_cfg: minhash.MinHashConfig = minhash.MinHashConfig()
  repo_cfg: minhash.MinHashConfig = minhash.MinHashConfig(threshold=0.9, bands=32, rows=4)


def normalise(text: str) -> str:
  lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
  return "\n".join(line.rstrip() for line in lines).rstrip("\n")


def content_hash(text: str) -> str:
  return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def with_hash(record: dict) -> dict:
  return {**record, "sha256": content_hash(record["text"])}


def repo_signature(hashes, cfg: minhash.MinHashConfig):
  return minhash.signature_of_set({h.encode() for h in hashes}, cfg)


def split_exact(group: list[dict], stage: str = STAGE):
  """Records of one hash -> (kept record, rejections naming it)."""
  group = sorted(group, key=lambda r: r["id"])
  kept = group[0]
  return kept, [records.reject(r, stage, "exact_duplicate", kept["id"]) for r in group[1:]]


# ---------------------------------------------------------------------------------------------
# Without Beam (tests, small runs): the same decisions as the Beam transforms below.

def dedup_records(recs: list[dict], cfg: DedupConfig) -> tuple[list[dict], list[dict]]:
  """(kept records with sha256, rejections) after repo-level, exact and near dedup."""
  recs = [with_hash(r) for r in recs]
  rejected = []
  if cfg.repo:
    by_repo: dict[str, set] = {}
    for r in recs:
      by_repo.setdefault(r["repo"], set()).add(r["sha256"])
    dup = minhash.near_duplicates(
        [(repo, repo_signature(h, cfg.repo_cfg)) for repo, h in sorted(by_repo.items())], cfg.repo_cfg)
    rejected += [records.reject(r, STAGE, "near_duplicate_repo", f"repo:{dup[r['repo']]}")
                 for r in recs if r["repo"] in dup]
    recs = [r for r in recs if r["repo"] not in dup]
  if cfg.exact:
    groups: dict[str, list] = {}
    for r in recs:
      groups.setdefault(r["sha256"], []).append(r)
    recs = []
    for g in groups.values():
      kept, rej = split_exact(g)
      recs.append(kept)
      rejected += rej
  if cfg.near:
    dup = minhash.near_duplicates([(r["id"], minhash.signature(r["text"], cfg.near_cfg))
                                   for r in recs], cfg.near_cfg)
    rejected += [records.reject(r, STAGE, "near_duplicate", dup[r["id"]])
                 for r in recs if r["id"] in dup]
    recs = [r for r in recs if r["id"] not in dup]
  return sorted(recs, key=lambda r: r["id"]), rejected


# ---------------------------------------------------------------------------------------------
# Beam.

def _neighbours(edges, label: str):
  """Undirected edges (a, b) -> (node, its distinct neighbours) (self-loops dropped)."""
  import apache_beam as beam
  return (edges | f"{label}BothWays" >> beam.FlatMap(
              lambda ab: [(ab[0], ab[1]), (ab[1], ab[0])] if ab[0] != ab[1] else [])
          | f"{label}Group" >> beam.GroupByKey()
          | f"{label}Set" >> beam.MapTuple(lambda node, ns: (node, set(ns))))


def _large_star(node, ns):
  """Kiveris et al.'s large-star: the larger neighbours of a node hang on its neighbourhood's
  minimum."""
  low = min(ns | {node})
  return [(v, low) for v in ns if v > node]


def _small_star(node, ns):
  """Small-star: the node and its smaller neighbours all hang on their minimum."""
  members = {v for v in ns if v < node} | {node}
  low = min(members)
  return [(v, low) for v in members if v != low]


def _star_or_not(node, ns):
  """The converged graph is a star per component, centred on its smallest id: a node with a
  smaller neighbour is a leaf with exactly that one neighbour. (leaf, centre), or UNCONVERGED."""
  import apache_beam as beam
  low = min(ns)
  if low > node:  # a centre
    return []
  if len(ns) == 1:
    return [(node, low)]
  return [beam.pvalue.TaggedOutput(_UNCONVERGED, node)]


_UNCONVERGED = "unconverged"


class ClustersDidNotConverge(RuntimeError):
  """A duplicate graph that cluster_rounds cannot resolve (the run stops; nothing wrong is
  written)."""


def _check_converged(n: int, rounds: int, label: str):
  if n:
    raise ClustersDidNotConverge(
        f"dedup {label}: {n} node(s) of the duplicate graph still unresolved after {rounds} "
        f"rounds of large-star/small-star; raise cluster_rounds in the MinHash config")
  return n


def _cluster_labels(pairs, cfg: minhash.MinHashConfig, label: str):
  """Duplicate pairs (a, b) -> (member, kept id) for every non-kept member of a cluster, the kept
  id being the cluster's smallest id: the connected components of the pair graph, computed with
  Beam GroupByKeys only (no list of pairs in one place, no broadcast).

  The alternating large-star / small-star rounds of Kiveris et al. ("Connected Components in
  MapReduce and Beyond", SoCC 2014): each step groups the edges by node and rewires them towards
  the smallest id in reach, keeping the components; the graph becomes one star per component,
  centred on its smallest id, in O(log^2 n) rounds (measured: 1 round for stars and cliques, 6
  for a 128-node chain of random ids, 12 at 32768; 15 when the ids ascend along the chain).
  `cfg.cluster_rounds` rounds are unrolled into the graph, then one grouping both checks that the
  graph is made of stars and reads the (leaf, centre) pairs off it; a graph that needs more
  rounds stops the run (ClustersDidNotConverge) rather than keep duplicates. The result is the
  union-find's of `minhash.clusters`.
  """
  import apache_beam as beam
  edges = pairs
  for r in range(cfg.cluster_rounds):
    edges = (_neighbours(edges, f"{label}Large{r}")
             | f"{label}Large{r}Star" >> beam.FlatMapTuple(_large_star))
    edges = (_neighbours(edges, f"{label}Small{r}")
             | f"{label}Small{r}Star" >> beam.FlatMapTuple(_small_star))
  out = (_neighbours(edges, f"{label}Final")
         | f"{label}Stars" >> beam.FlatMapTuple(_star_or_not).with_outputs(_UNCONVERGED,
                                                                            main="leaves"))
  _ = (out[_UNCONVERGED] | f"{label}CountUnresolved" >> beam.combiners.Count.Globally()
       | f"{label}Converged" >> beam.Map(_check_converged, cfg.cluster_rounds, label))
  return out.leaves


def _near_dup_map(pcoll_items, cfg: minhash.MinHashConfig, label: str):
  """(key, signature) PCollection -> PCollection of (key, kept key) for the non-kept members."""
  import apache_beam as beam
  pairs = (pcoll_items
           | f"{label}Bands" >> beam.FlatMap(
               lambda kv: [(b, kv) for b in minhash.band_keys(kv[1], cfg)])
           | f"{label}Bucket" >> beam.GroupByKey()
           | f"{label}Pairs" >> beam.FlatMap(
               lambda kv: minhash.candidate_pairs(list(kv[1]), cfg) if len(kv[1]) > 1 else [])
           | f"{label}DistinctPairs" >> beam.Distinct())
  return _cluster_labels(pairs, cfg, f"{label}Clusters")


def _split_joined(reason: str, detail, stage: str = STAGE):
  """A CoGroupByKey of records and their (at most one) kept id -> records and rejections."""
  import apache_beam as beam

  def split(kv):
    _, g = kv
    kept = list(g["kept"])
    for r in g["records"]:
      if kept:
        yield beam.pvalue.TaggedOutput(records.REJECTED,
                                       records.reject(r, stage, reason, detail(kept[0])))
      else:
        yield r
  return split


def dedup_transform(cfg: DedupConfig, stage: str = STAGE):
  """Beam PTransform: records -> kept (main, with sha256) and rejections (tag REJECTED).

  `stage` names the rejections' stage ("dedup" for files; the web pages' own dedup passes "web",
  so that stats.json tells their duplicates apart). Repository-level dedup needs a `repo` field:
  switch it off (cfg.repo=False) for records without repositories."""
  import apache_beam as beam

  class _Dedup(beam.PTransform):

    def expand(self, recs):
      recs = recs | "Hash" >> beam.Map(with_hash)
      rejections = []
      if cfg.repo:
        repo_sigs = (recs | "RepoHashes" >> beam.Map(lambda r: (r["repo"], r["sha256"]))
                     | "GroupRepo" >> beam.GroupByKey()
                     | "RepoSig" >> beam.MapTuple(
                         lambda repo, hs: (repo, repo_signature(set(hs), cfg.repo_cfg))))
        dup_repos = _near_dup_map(repo_sigs, cfg.repo_cfg, "Repo")

        out = ({"records": recs | "ByRepo" >> beam.Map(lambda r: (r["repo"], r)),
                "kept": dup_repos} | "JoinRepos" >> beam.CoGroupByKey()
               | "DropRepos" >> beam.FlatMap(_split_joined(
                   "near_duplicate_repo", lambda kept: f"repo:{kept}", stage))
               .with_outputs(records.REJECTED, main="kept"))
        recs = out.kept
        rejections.append(out[records.REJECTED])
      if cfg.exact:
        def split_group(_, group):
          kept, rej = split_exact(list(group), stage)
          yield kept
          for r in rej:
            yield records.tagged_rejection(r)

        out = (recs | "KeyHash" >> beam.Map(lambda r: (r["sha256"], r))
               | "GroupHash" >> beam.GroupByKey()
               | "Exact" >> beam.FlatMapTuple(split_group).with_outputs(records.REJECTED, main="kept"))
        recs = out.kept
        rejections.append(out[records.REJECTED])
      if cfg.near:
        sigs = recs | "NearSig" >> beam.Map(
            lambda r: (r["id"], minhash.signature(r["text"], cfg.near_cfg)))
        dups = _near_dup_map(sigs, cfg.near_cfg, "Near")

        out = ({"records": recs | "ById" >> beam.Map(lambda r: (r["id"], r)),
                "kept": dups} | "JoinNear" >> beam.CoGroupByKey()
               | "DropNear" >> beam.FlatMap(_split_joined(
                   "near_duplicate", lambda kept: kept, stage))
               .with_outputs(records.REJECTED, main="kept"))
        recs = out.kept
        rejections.append(out[records.REJECTED])
      if not rejections:
        rejected = recs.pipeline | "NoRejections" >> beam.Create([])
      else:
        rejected = tuple(rejections) | "AllRejections" >> beam.Flatten()
      return {"kept": recs, records.REJECTED: rejected}

  return _Dedup()
