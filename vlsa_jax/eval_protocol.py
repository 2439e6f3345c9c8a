"""What a retrieval evaluation scores: its directions and its split specs (`config.eval`).

A direction is `<query>2<gallery>` over the letters v (video), a (audio), t (text)
and va (video and audio fused: the normalised sum of the two unit embeddings).
A split spec is `DIR`, `DIR+OTHER` or `DIR+OTHER:letters`: OTHER's clips join the
galleries of DIR's directions as distractors that are never a correct answer,
all their media or only the modalities in `letters` ('a' or 'v').
"""
import dataclasses
import pathlib

from vlsa_jax.modalities import AUDIO, FUSED, LETTERS, TEXT, VIDEO

# direction -> (query modality, gallery modality)
DIRECTIONS = {
    "t2v": (TEXT, VIDEO), "v2t": (VIDEO, TEXT),
    "t2a": (TEXT, AUDIO), "a2t": (AUDIO, TEXT),
    "v2a": (VIDEO, AUDIO), "a2v": (AUDIO, VIDEO),
    "t2va": (TEXT, FUSED), "va2t": (FUSED, TEXT),
}


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """One split to evaluate, as `config.eval.splits` names it.

    Attributes:
      name: the split's directory name: DIR/eval/<name>/metrics.json.
      path: the prepared split.
      distractor_path: the split whose clips join the galleries, or None.
      distractor_modalities: letters from 'av': the distractors' media that join the
        galleries.
    """

    name: str
    path: str
    distractor_path: str | None = None
    distractor_modalities: str = "av"


def parse_directions(text: str) -> tuple[str, ...]:
    """Parses `config.eval.directions`: 't2v,v2t' -> ('t2v', 'v2t').

    Raises:
      ValueError: naming an unknown direction, or none given.
    """
    directions = tuple(d.strip() for d in text.split(",") if d.strip())
    unknown = [d for d in directions if d not in DIRECTIONS]
    if unknown or not directions:
        raise ValueError(f"{unknown or text!r}: directions are a comma-separated subset of "
                         f"{', '.join(DIRECTIONS)}")
    return directions


def parse_split_specs(text: str) -> tuple[SplitSpec, ...]:
    """Parses `config.eval.splits`: comma-separated `DIR`, `DIR+OTHER` or `DIR+OTHER:letters`.

    Raises:
      ValueError: a malformed split, or two with the same directory name.
    """
    specs = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        path, plus, distractors = item.partition("+")
        distractor_path, _, letters = distractors.partition(":")
        letters = letters or "av"
        if not path or (plus and not distractor_path) or not set(letters) <= set("av"):
            raise ValueError(f"{item!r} is not DIR, DIR+OTHER or DIR+OTHER:letters "
                             "(letters from 'av')")
        specs.append(SplitSpec(pathlib.PurePath(path).name, path, distractor_path or None,
                               letters))
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"two splits are named {repeated[0]!r}: results are written per "
                         "directory name, so give the directories distinct names")
    return tuple(specs)


def supported(direction: str, modalities: str) -> bool:
    """Whether a split carrying `modalities` (letters) can be scored in `direction`."""
    query, gallery = DIRECTIONS[direction]
    return set(LETTERS[query]) | set(LETTERS[gallery]) <= set(modalities)
