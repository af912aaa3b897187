"""Model metadata normalisation shared by the registry, the Hub crawler and the benchmark.

Three labels describe a routing target besides its id:

- the **domain**, "<Category> <Task>" (e.g. ``"Computer Vision Object Detection"``), derived from a Hub
  pipeline tag with CMRBench's taxonomy;
- the **parent group**, the domain's category (``"computer vision"``), used to draw same-group negatives;
- the **family**, a normalised name shared by variants of one model (``"clip-vit-patch16"``), derived with
  CMRBench's normalisation (lower-case base name without version, parameter-count and size tokens).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

__all__ = [
    "PARENT_GROUPS",
    "domain_key",
    "domain_from_pipeline_tag",
    "pipeline_tag_from_domain",
    "normalize_model_name",
    "parent_group",
    "FamilyAssigner",
]

# Hub pipeline tag -> CMRBench domain. Where CMRBench's taxonomy lists a task under two categories the
# later category wins (its loop keeps overwriting), which is what these strings reproduce.
_PIPELINE_TAG_DOMAINS: dict[str, str] = {
    # Multimodal
    "audio-text-to-text": "Multimodal Audio-Text-to-Text",
    "image-text-to-text": "Multimodal Image-Text-to-Text",
    "visual-question-answering": "Multimodal Visual Question Answering",
    "document-question-answering": "Multimodal Document Question Answering",
    "video-text-to-text": "Multimodal Video-Text-to-Text",
    "visual-document-retrieval": "Multimodal Visual Document Retrieval",
    "any-to-any": "Multimodal Any-to-Any",
    "graph-ml": "Multimodal Graph Machine Learning",
    # Computer vision
    "depth-estimation": "Computer Vision Depth Estimation",
    "image-classification": "Computer Vision Image Classification",
    "object-detection": "Computer Vision Object Detection",
    "image-segmentation": "Computer Vision Image Segmentation",
    "text-to-image": "Computer Vision Text-to-Image",
    "image-to-text": "Computer Vision Image-to-Text",
    "image-to-image": "Computer Vision Image-to-Image",
    "image-to-video": "Computer Vision Image-to-Video",
    "unconditional-image-generation": "Computer Vision Unconditional Image Generation",
    "video-classification": "Computer Vision Video Classification",
    "text-to-video": "Computer Vision Text-to-Video",
    "zero-shot-image-classification": "Computer Vision Zero-Shot Image Classification",
    "mask-generation": "Computer Vision Mask Generation",
    "zero-shot-object-detection": "Computer Vision Zero-Shot Object Detection",
    "text-to-3d": "Computer Vision Text-to-3D",
    "image-to-3d": "Computer Vision Image-to-3D",
    "image-feature-extraction": "Computer Vision Image Feature Extraction",
    "keypoint-detection": "Computer Vision Keypoint Detection",
    "video-to-video": "Computer Vision Video-to-Video",
    # Natural language processing
    "text-classification": "Natural Language Processing Text Classification",
    "token-classification": "Natural Language Processing Token Classification",
    "table-question-answering": "Natural Language Processing Table Question Answering",
    "question-answering": "Natural Language Processing Question Answering",
    "zero-shot-classification": "Natural Language Processing Zero-Shot Classification",
    "translation": "Natural Language Processing Translation",
    "summarization": "Natural Language Processing Summarization",
    "feature-extraction": "Natural Language Processing Feature Extraction",
    "text-generation": "Natural Language Processing Text Generation",
    "text2text-generation": "Natural Language Processing Text2Text Generation",
    "fill-mask": "Natural Language Processing Fill-Mask",
    "sentence-similarity": "Natural Language Processing Sentence Similarity",
    "text-ranking": "Natural Language Processing Text Ranking",
    "conversational": "Natural Language Processing Conversational",
    # Audio
    "text-to-speech": "Audio Text-to-Speech",
    "text-to-audio": "Audio Text-to-Audio",
    "automatic-speech-recognition": "Audio Automatic Speech Recognition",
    "audio-to-audio": "Audio Audio-to-Audio",
    "audio-classification": "Audio Audio Classification",
    "voice-activity-detection": "Audio Voice Activity Detection",
    # Tabular
    "tabular-classification": "Tabular Tabular Classification",
    "tabular-regression": "Tabular Tabular Regression",
    "time-series-forecasting": "Tabular Time Series Forecasting",
    # Reinforcement learning
    "reinforcement-learning": "Reinforcement Learning Reinforcement Learning",
    "robotics": "Reinforcement Learning Robotics",
}

# CMRBench domain -> Hub pipeline tag: the inverse of the table above, plus the spellings CMRBench's files
# use besides the taxonomy's ("Multimodal Document Question Answer", "Audio Classification", ...).
_DOMAIN_PIPELINE_TAGS: dict[str, str] = {
    " ".join(domain.lower().split()): tag for tag, domain in _PIPELINE_TAG_DOMAINS.items()
}
_DOMAIN_TASK_ALIASES: dict[str, str] = {"document question answer": "document-question-answering"}

PARENT_GROUPS: tuple[str, ...] = (
    "natural language processing",
    "computer vision",
    "audio",
    "multimodal",
    "tabular",
    "reinforcement learning",
    "time series",
    "graph",
)

_VERSION_TOKEN = re.compile(r"^v\d+(\.\d+)?(_\d+)?$")
_PARAM_COUNT_TOKEN = re.compile(r"^\d+(\.\d+)?b\d*$")
_SIZE_TOKENS = frozenset({"tiny", "mini", "small", "base", "medium", "large", "xl", "xxl", "xxxl"})
_ROOT_ALIASES = {"distilbert": "bert", "xlm": "xlm-roberta"}


def domain_key(domain: str | None) -> str:
    """Return the comparison key of a domain string: lower-case, whitespace collapsed."""
    return " ".join((domain or "").lower().split())


def domain_from_pipeline_tag(pipeline_tag: str | None) -> str:
    """Map a Hub pipeline tag (``"object-detection"``) to a CMRBench domain string.

    Unknown tags become ``"Other <Task Words>"`` so that they still group together; a missing tag gives
    ``"Other"``.
    """
    if not pipeline_tag:
        return "Other"
    tag = pipeline_tag.strip().lower()
    if tag in _PIPELINE_TAG_DOMAINS:
        return _PIPELINE_TAG_DOMAINS[tag]
    return "Other " + " ".join(word.capitalize() for word in tag.split("-"))


@lru_cache(maxsize=4096)
def pipeline_tag_from_domain(domain: str | None) -> str | None:
    """Map a CMRBench domain to its Hub pipeline tag: the inverse of :func:`domain_from_pipeline_tag`.

    ``"Audio Automatic Speech Recognition"`` -> ``"automatic-speech-recognition"``. A domain outside the
    taxonomy is matched by its task words (``"Multimodal Image-to-Text"`` -> ``"image-to-text"``,
    ``"Reinforcement Learning"`` -> ``"reinforcement-learning"``), and ``"Other <Task Words>"`` gives back the
    tag it was made from.

    Args:
        domain: The domain string (case and spacing are ignored).

    Returns:
        The pipeline tag, or ``None`` when the domain names no task (``None``, ``""``, ``"Other"``, unknown
        words).
    """
    key = domain_key(domain)
    if not key:
        return None
    if key in _DOMAIN_PIPELINE_TAGS:
        return _DOMAIN_PIPELINE_TAGS[key]
    words = key.split()
    if words[0] == "other" and len(words) > 1:
        return "-".join(words[1:])
    for start in range(len(words)):
        slug = "-".join(words[start:])
        if slug in _PIPELINE_TAG_DOMAINS:
            return slug
        alias = _DOMAIN_TASK_ALIASES.get(" ".join(words[start:]))
        if alias is not None:
            return alias
    return None


def parent_group(domain: str | None) -> str:
    """Return the parent group of a domain: its category prefix, else its first word, else ``"other"``."""
    key = domain_key(domain)
    for group in PARENT_GROUPS:
        if key.startswith(group):
            return group
    return key.split(" ", 1)[0] if key else "other"


def normalize_model_name(model_id: str) -> str:
    """Normalise a model id the CMRBench way: ``"Qwen/Qwen2.5-VL-7B-Instruct"`` -> ``"qwen2.5-vl-instruct"``.

    The base name is lower-cased; version (``v2``), parameter-count (``7b``) and size (``base``) tokens are
    dropped, unless dropping the size words would leave nothing.

    Raises:
        ValueError: if the id normalises to an empty name.
    """
    name = model_id.strip().lower().rsplit("/", 1)[-1].replace("_", "-")
    name = re.sub(r"[^\w\-.]+", "-", name)
    name = re.sub(r"-{2,}", "-", name).strip("-")
    tokens = [t for t in name.split("-") if t]
    tokens = [t for t in tokens if not _VERSION_TOKEN.match(t) and not _PARAM_COUNT_TOKEN.match(t)]
    without_sizes = [t for t in tokens if t not in _SIZE_TOKENS]
    tokens = without_sizes or tokens
    if not tokens:
        raise ValueError(f"Model id {model_id!r} normalises to an empty family name.")
    return "-".join(tokens)


def _root_token(normalized: str) -> str:
    root = normalized.split("-", 1)[0]
    return _ROOT_ALIASES.get(root, root)


class FamilyAssigner:
    """Assign a family to new model ids, consistently with the families already known.

    A new id joins the family of its most similar known name within the same root-token bucket (cosine
    similarity of character 3-5-gram TF-IDF vectors, as CMRBench clusters names) when the similarity is
    at least ``1 - distance_threshold``; otherwise its normalised name starts a new family. Known
    families never change, so labels stay stable as the registry grows.

    Args:
        known: model id -> family of the models already registered.
        distance_threshold: CMRBench's clustering threshold on cosine distance.
    """

    def __init__(self, known: Mapping[str, str] | None = None, distance_threshold: float = 0.7) -> None:
        self.distance_threshold = distance_threshold
        self._buckets: dict[str, dict[str, str]] = {}
        for model_id, family in (known or {}).items():
            self._add(normalize_model_name(model_id), family)

    def _add(self, normalized: str, family: str) -> None:
        self._buckets.setdefault(_root_token(normalized), {}).setdefault(normalized, family)

    def assign(self, model_ids: Iterable[str]) -> dict[str, str]:
        """Return model id -> family for ``model_ids``, registering each so later ids can join it."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        result: dict[str, str] = {}
        for model_id in model_ids:
            normalized = normalize_model_name(model_id)
            bucket = self._buckets.get(_root_token(normalized), {})
            family = bucket.get(normalized)
            if family is None and bucket:
                names = list(bucket)
                vectors = TfidfVectorizer(analyzer="char", ngram_range=(3, 5)).fit_transform(
                    names + [normalized]
                )
                similarity = (vectors[:-1] @ vectors[-1].T).toarray().ravel()
                best = int(similarity.argmax())
                if similarity[best] >= 1.0 - self.distance_threshold:
                    family = bucket[names[best]]
            family = family or normalized
            self._add(normalized, family)
            result[model_id] = family
        return result
