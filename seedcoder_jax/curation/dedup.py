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
agree; a rejection's detail names the kept id. Beam: GroupByKey on the hash / on LSH band keys, the
duplicate pairs (few) gathered into one union-find.
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


def split_exact(group: list[dict]):
  """Records of one hash -> (kept record, rejections naming it)."""
  group = sorted(group, key=lambda r: r["id"])
  kept = group[0]
  return kept, [records.reject(r, STAGE, "exact_duplicate", kept["id"]) for r in group[1:]]


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

def _near_dup_map(pcoll_items, cfg: minhash.MinHashConfig, label: str):
  """(key, signature) PCollection -> PCollection of (key, kept key) for the non-kept members."""
  import apache_beam as beam
  return (pcoll_items
          | f"{label}Bands" >> beam.FlatMap(
              lambda kv: [(b, kv) for b in minhash.band_keys(kv[1], cfg)])
          | f"{label}Bucket" >> beam.GroupByKey()
          | f"{label}Pairs" >> beam.FlatMap(
              lambda kv: minhash.candidate_pairs(list(kv[1]), cfg) if len(kv[1]) > 1 else [])
          | f"{label}Distinct" >> beam.Distinct()
          | f"{label}AllPairs" >> beam.combiners.ToList()
          | f"{label}Clusters" >> beam.FlatMap(lambda pairs: sorted(minhash.clusters(pairs).items())))


def dedup_transform(cfg: DedupConfig):
  """Beam PTransform: records -> kept (main, with sha256) and rejections (tag REJECTED)."""
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

        def split_repo(r, dup):
          if r["repo"] in dup:
            return records.tagged_rejection(
                records.reject(r, STAGE, "near_duplicate_repo", f"repo:{dup[r['repo']]}"))
          return r

        out = recs | "DropRepos" >> beam.Map(
            split_repo, beam.pvalue.AsDict(dup_repos)).with_outputs(records.REJECTED, main="kept")
        recs = out.kept
        rejections.append(out[records.REJECTED])
      if cfg.exact:
        def split_group(_, group):
          kept, rej = split_exact(list(group))
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

        def split_near(r, dup):
          if r["id"] in dup:
            return records.tagged_rejection(records.reject(r, STAGE, "near_duplicate", dup[r["id"]]))
          return r

        out = recs | "DropNear" >> beam.Map(
            split_near, beam.pvalue.AsDict(dups)).with_outputs(records.REJECTED, main="kept")
        recs = out.kept
        rejections.append(out[records.REJECTED])
      if not rejections:
        rejected = recs.pipeline | "NoRejections" >> beam.Create([])
      else:
        rejected = tuple(rejections) | "AllRejections" >> beam.Flatten()
      return {"kept": recs, records.REJECTED: rejected}

  return _Dedup()
