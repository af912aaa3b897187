"""Write training prompts for Hub models from their cards, with no network model.

:class:`TemplateGenerator` writes pseudo-queries from each card, deterministically (seeded per model):

- **task requests**: templates per pipeline tag, in the style of user requests ("Transcribe this interview
  recording.", "Detect every car in this parking lot photo."), with languages named in the card filled in;
- **description requests**: sentences of the card's description rewritten as requests ("It produces dense
  image features ..." -> "I need something that produces dense image features ..."), the model's own name
  removed;
- **use requests**: the card's intended-use bullets turned into requests ("Summarise legal contracts" ->
  "Can you summarise legal contracts?").

A user-supplied generator can write more realistic prompts instead: :class:`TransformersGenerator` (a local
``transformers`` text-generation model) or :class:`InferenceClientGenerator` (``huggingface_hub``'s
``InferenceClient``); both fall back to templates for whatever they fail to produce.
"""

from __future__ import annotations

import json
import random
import re
from importlib import resources
from typing import Any, Protocol, runtime_checkable

from .._utils.hub_errors import describe_http_error, http_status
from .._utils.retry import RetryPolicy, call_with_retries
from .._utils.text import split_sentences
from ..errors import HubAccessError
from ..routing.registry import model_key
from ..routing.taxonomy import normalize_model_name
from .crawl import CrawledModel

__all__ = [
    "TASK_TEMPLATES",
    "PromptGenerator",
    "TemplateGenerator",
    "TransformersGenerator",
    "InferenceClientGenerator",
    "generator_from_spec",
    "generator_fingerprint",
    "generate_many",
    "parse_requests",
]

TEMPLATES_FILE = "prompt_templates.json"
"""The template tables, package data of :mod:`hubroute.update.templates` (see its ``_comment``)."""


def _load_templates() -> dict[str, Any]:
    """The template tables (read once, at import).

    Raises:
        ValueError: the file lacks a table.
    """
    text = resources.files("hubroute.update.templates").joinpath(TEMPLATES_FILE).read_text(encoding="utf-8")
    data = json.loads(text)
    missing = {"task_templates", "generic_templates", "languages", "default_languages", "model_subject",
               "rewrites", "generic_wrappers", "verbs"} - set(data)  # fmt: skip
    if missing:
        raise ValueError(f"{TEMPLATES_FILE} lacks {sorted(missing)}.")
    return data


_TABLES = _load_templates()
# Requests per pipeline tag, written like the requests users send (CMRBench's HuggingBench style).
# ``{lang}`` is replaced by a language the card names (else a common one).
TASK_TEMPLATES: dict[str, tuple[str, ...]] = {
    tag: tuple(templates) for tag, templates in _TABLES["task_templates"].items()
}
_GENERIC_TEMPLATES: tuple[str, ...] = tuple(_TABLES["generic_templates"])
_LANGUAGES: list[str] = list(_TABLES["languages"])
_DEFAULT_LANGUAGES: tuple[str, ...] = tuple(_TABLES["default_languages"])
_MODEL_SUBJECT: str = _TABLES["model_subject"]
_REWRITES: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = tuple(
    (re.compile(rule["pattern"].replace("{subject}", _MODEL_SUBJECT), re.I), tuple(rule["forms"]))
    for rule in _TABLES["rewrites"]
)
_GENERIC_WRAPPERS: tuple[str, ...] = tuple(_TABLES["generic_wrappers"])
_VERBS: frozenset[str] = frozenset(_TABLES["verbs"])
_BAD_SENTENCE = re.compile(
    r"licen[cs]e|citation|\bcite\b|arxiv|github|huggingface|hugging face|download|install|parameters?\b|"
    r"released? (on|in|under)|copyright|please refer|see the|for more (details|information)|@|"
    r"evaluation set|results on|\bloss\b|pull requests?|merged|quantiz|gguf|checkpoint|repository|"
    r"we (thank|release|would)|community|discord|\bjoin\b",
    re.IGNORECASE,
)


def _plain(sentence: str) -> bool:
    """Whether a sentence reads as prose: mostly letters, no emoji or markup left."""
    visible = [c for c in sentence if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    odd = sum(ord(c) > 0x2000 and not c.isalpha() for c in visible)
    return bool(visible) and letters >= 0.75 * len(visible) and odd == 0


@runtime_checkable
class PromptGenerator(Protocol):
    """Writes training prompts for a crawled model."""

    def generate(self, model: CrawledModel, count: int, seed: int = 0) -> list[str]:
        """Return up to ``count`` distinct prompts that ``model`` should serve (deterministic for a seed)."""
        ...


def generator_fingerprint(generator: PromptGenerator) -> str:
    """What identifies a generator's output: its class and its plain settings (numbers, text, flags).

    Used to key the prompts written so far (:func:`hubroute.update.experience.build_experience`), so that a
    generator set up differently writes again.
    """
    settings = {
        k: v
        for k, v in sorted(vars(generator).items())
        if not k.startswith("_") and isinstance(v, (str, int, float, bool, type(None)))
    }
    return json.dumps({"class": f"{type(generator).__module__}.{type(generator).__qualname__}", **settings})


def generate_many(
    generator: PromptGenerator, models: list[CrawledModel], count: int, seed: int = 0
) -> list[list[str]]:
    """Prompts for several models at once: the generator's ``generate_batch`` when it has one (a language
    model writes a batch in one pass, an inference client calls in parallel), else one ``generate`` a model.

    Returns:
        One list of prompts per model, in order.
    """
    batch = getattr(generator, "generate_batch", None)
    if callable(batch):
        return [list(p) for p in batch(models, count, seed)]
    return [generator.generate(model, count, seed) for model in models]


def _clean_prompt(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip(" -–—:;,")
    return text[:1].upper() + text[1:] if text else text


def _name_pattern(model: CrawledModel) -> re.Pattern[str] | None:
    """A pattern matching the model's own names (repo name, family name, title), to keep them out of prompts."""
    names = {model.model_id.rsplit("/", 1)[-1]}
    try:
        names.add(normalize_model_name(model.model_id))
    except ValueError:
        pass
    if model.title and len(model.title.split()) <= 4:
        names.add(model.title)
    names = {n for n in names if len(n) >= 3}
    if not names:
        return None
    alternatives = sorted((re.escape(n) for n in names), key=len, reverse=True)
    return re.compile(r"(?<![\w-])(?:" + "|".join(alternatives) + r")(?![\w-])", re.IGNORECASE)


class TemplateGenerator:
    """Deterministic pseudo-queries from a card: task templates, description and use requests (no network).

    Args:
        task_share: Share of the prompts taken from the pipeline tag's task templates.
        use_share: Share taken from the intended uses (the rest comes from the description).
        min_words, max_words: Length bounds of description sentences that become requests.
    """

    def __init__(
        self, task_share: float = 0.4, use_share: float = 0.2, min_words: int = 5, max_words: int = 40
    ) -> None:
        if not 0 <= task_share <= 1 or not 0 <= use_share <= 1 or task_share + use_share > 1:
            raise ValueError("task_share and use_share must be within [0, 1] and sum to at most 1.")
        self.task_share = task_share
        self.use_share = use_share
        self.min_words = min_words
        self.max_words = max_words

    # -- the three sources -----------------------------------------------------------------------------------
    def task_requests(self, model: CrawledModel, rng: random.Random) -> list[str]:
        """Task templates of the model's pipeline tag, languages filled in from the card."""
        templates = TASK_TEMPLATES.get((model.pipeline_tag or "").lower())
        if templates is None:
            task = (model.pipeline_tag or "").replace("-", " ").strip() or "this task"
            templates = tuple(t.format(task=task) for t in _GENERIC_TEMPLATES)
        text = f"{model.description} {' '.join(model.tags)}".lower()
        languages = [lang.capitalize() for lang in _LANGUAGES if re.search(rf"\b{lang}\b", text)]
        languages = [lang for lang in languages if lang != "English"] or list(_DEFAULT_LANGUAGES)
        return [t.replace("{lang}", rng.choice(languages)) for t in templates]

    def description_requests(self, model: CrawledModel, rng: random.Random) -> list[str]:
        """Description sentences rewritten as requests, the model's own name removed."""
        names = _name_pattern(model)
        out = []
        seen: set[str] = set()
        for sentence in split_sentences(model.description, prose=True):
            sentence = sentence.strip().rstrip(".!?;:")
            if names is not None:
                sentence = names.sub("it", sentence)
            if sentence.lower() in seen:
                continue
            seen.add(sentence.lower())
            words = sentence.split()
            if not self.min_words <= len(words) <= self.max_words or _BAD_SENTENCE.search(sentence):
                continue
            if not _plain(sentence):
                continue
            out.append(_clean_prompt(self._rewrite(sentence, rng)))
        return out

    def use_requests(self, model: CrawledModel, rng: random.Random) -> list[str]:
        """Intended-use items turned into requests."""
        out = []
        for use in model.uses:
            use = use.strip().rstrip(".!?;:")
            words = use.split()
            if len(words) < 2 or len(words) > self.max_words or _BAD_SENTENCE.search(use):
                continue
            first = words[0].lower()
            if first in _VERBS:
                request = rng.choice(("Can you {0}?", "I want to {0}.", "Please {0}.")).format(
                    use[:1].lower() + use[1:]
                )
            elif first.endswith("ing"):
                request = rng.choice(("I need help with {0}.", "Can you help me with {0}?")).format(
                    use[:1].lower() + use[1:]
                )
            else:
                request = rng.choice(("I need help with {0}.", "Can you help with this: {0}?")).format(use)
            out.append(_clean_prompt(request))
        return out

    @staticmethod
    def _rewrite(sentence: str, rng: random.Random) -> str:
        for pattern, forms in _REWRITES:
            match = pattern.match(sentence)
            if match:
                return rng.choice(forms).format(match.group(1))
        return rng.choice(_GENERIC_WRAPPERS).format(sentence)

    # -- the mix ---------------------------------------------------------------------------------------------
    def generate(self, model: CrawledModel, count: int, seed: int = 0) -> list[str]:
        """Return ``count`` distinct prompts for ``model`` (fewer only when the card gives too little).

        Args:
            model: The crawled model.
            count: Prompts wanted.
            seed: Seed; the same (model, seed) always gives the same prompts.

        Returns:
            Task, use and description requests mixed by :attr:`task_share` and :attr:`use_share`.
        """
        rng = random.Random(f"{seed}|{model_key(model.model_id)}")
        pools = {
            "task": self.task_requests(model, rng),
            "use": self.use_requests(model, rng),
            "description": self.description_requests(model, rng),
        }
        for pool in pools.values():
            rng.shuffle(pool)
        quota = {"task": round(count * self.task_share), "use": round(count * self.use_share)}
        quota["description"] = count - quota["task"] - quota["use"]
        chosen: list[str] = []
        seen: set[str] = set()

        def take(pool: list[str], limit: int) -> None:
            while pool and limit > 0 and len(chosen) < count:
                prompt = pool.pop()
                if prompt and prompt.lower() not in seen:
                    seen.add(prompt.lower())
                    chosen.append(prompt)
                    limit -= 1

        for name in ("task", "use", "description"):
            take(pools[name], quota[name])
        for name in ("description", "use", "task"):  # fill what a thin card could not give
            take(pools[name], count)
        return chosen


# ---------------------------------------------------------------------------------------------- LLM writers
_INSTRUCTION = (
    "Here is the description of a machine-learning model from its model card.\n"
    "Task: {task}\nDescription: {description}\n\n"
    "Write {count} different, natural, self-contained requests that a user could send and that this model "
    "would serve. Do not name the model and do not use the words 'model', 'API' or 'tool'. Write one request "
    "per line, with no numbering."
)
_LIST_PREFIX = re.compile(r"^\s*(?:[-*•]|\d{1,3}[.)]|\"|')\s*")


def parse_requests(text: str, model: CrawledModel, count: int) -> list[str]:
    """Parse a generator's answer into at most ``count`` distinct requests (one per line).

    Lines that are too short or too long, or that name the model, are dropped.
    """
    names = _name_pattern(model)
    out: list[str] = []
    seen: set[str] = set()
    for line in text.splitlines():
        line = _LIST_PREFIX.sub("", line).strip().strip("\"'").strip()
        words = line.split()
        if not 3 <= len(words) <= 60 or (names is not None and names.search(line)) or line.lower() in seen:
            continue
        seen.add(line.lower())
        out.append(line)
        if len(out) == count:
            break
    return out


class _LLMGenerator:
    """Shared logic of the generators backed by a language model: the instruction, parsing, fallback."""

    def __init__(self, fallback: PromptGenerator | None = None, max_description_words: int = 250) -> None:
        self.fallback = fallback or TemplateGenerator()
        self.max_description_words = max_description_words

    def instruction(self, model: CrawledModel, count: int) -> str:
        """The request sent to the language model for ``model``."""
        description = " ".join(model.card_text.split()[: self.max_description_words]) or "(no description)"
        task = (model.pipeline_tag or "unknown").replace("-", " ")
        return _INSTRUCTION.format(task=task, description=description, count=count)

    def _complete(self, instruction: str, seed: int) -> str:
        raise NotImplementedError

    def _complete_batch(self, instructions: list[str], seed: int) -> list[str]:
        """Answers to several instructions (one call each unless a subclass batches them)."""
        return [self._complete(instruction, seed) for instruction in instructions]

    def _fill(self, answer: str, model: CrawledModel, count: int, seed: int) -> list[str]:
        prompts = parse_requests(answer, model, count)
        if len(prompts) < count:
            seen = {p.lower() for p in prompts}
            extra = [p for p in self.fallback.generate(model, count, seed) if p.lower() not in seen]
            prompts += extra[: count - len(prompts)]
        return prompts

    def generate(self, model: CrawledModel, count: int, seed: int = 0) -> list[str]:
        """Ask the language model for ``count`` requests; templates fill in what it does not give."""
        return self._fill(self._complete(self.instruction(model, count), seed), model, count, seed)

    def generate_batch(self, models: list[CrawledModel], count: int, seed: int = 0) -> list[list[str]]:
        """:meth:`generate` for several models, the language model asked for all of them in one batch."""
        answers = self._complete_batch([self.instruction(m, count) for m in models], seed)
        return [self._fill(answer, m, count, seed) for answer, m in zip(answers, models)]


class TransformersGenerator(_LLMGenerator):
    """Prompts written by a local ``transformers`` text-generation model.

    Args:
        model: A model id or a local folder (loaded with ``transformers.pipeline("text-generation")``).
        max_new_tokens: Tokens generated per model.
        temperature: Sampling temperature (0: greedy).
        device: Device of the pipeline (default: transformers' choice).
        pipeline: An already built text-generation pipeline (``model`` is then only a label).
        fallback: Generator used to fill in (default: :class:`TemplateGenerator`).
        batch_size: Instructions generated together by :meth:`generate_batch` (left-padded).
    """

    def __init__(
        self,
        model: str,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        device: str | int | None = None,
        pipeline: Any = None,
        fallback: PromptGenerator | None = None,
        batch_size: int = 8,
    ) -> None:
        super().__init__(fallback)
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1.")
        self.batch_size = batch_size
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.device = device
        self._pipeline = pipeline

    @property
    def pipeline(self) -> Any:
        """The text-generation pipeline (built on first use)."""
        if self._pipeline is None:
            from transformers import pipeline

            self._pipeline = pipeline("text-generation", model=self.model, device=self.device)
        return self._pipeline

    def _complete(self, instruction: str, seed: int) -> str:
        return self._complete_batch([instruction], seed)[0]

    def _complete_batch(self, instructions: list[str], seed: int) -> list[str]:
        from transformers import set_seed

        set_seed(seed)
        pipe = self.pipeline
        tokenizer = getattr(pipe, "tokenizer", None)
        chat = tokenizer is not None and getattr(tokenizer, "chat_template", None)
        inputs: list[Any] = [[{"role": "user", "content": i}] if chat else i for i in instructions]
        sampling = (
            {"do_sample": True, "temperature": self.temperature}
            if self.temperature > 0
            else {"do_sample": False}
        )
        batching: dict[str, Any] = {}
        if (
            len(inputs) > 1 and tokenizer is not None
        ):  # decoders pad on the left, with EOS when they have no pad
            tokenizer.padding_side = "left"
            if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
                tokenizer.pad_token_id = tokenizer.eos_token_id
            batching["batch_size"] = self.batch_size
        if len(inputs) == 1:
            outputs = [
                pipe(inputs[0], max_new_tokens=self.max_new_tokens, return_full_text=False, **sampling)
            ]
        else:
            outputs = pipe(
                inputs, max_new_tokens=self.max_new_tokens, return_full_text=False, **sampling, **batching
            )
        answers = []
        for output in outputs:
            generated = output[0]["generated_text"] if output else ""
            if isinstance(generated, list):  # chat output: the list of messages
                generated = generated[-1].get("content", "") if generated else ""
            answers.append(str(generated))
        return answers


class InferenceClientGenerator(_LLMGenerator):
    """Prompts written by a chat model served through ``huggingface_hub.InferenceClient``.

    Args:
        model: The model id (or endpoint URL) to call.
        token: Hub token (needed by most providers).
        max_tokens: Tokens generated per model.
        temperature: Sampling temperature.
        client: An already built client (tests pass a fake one).
        fallback: Generator used to fill in (default: :class:`TemplateGenerator`).
        retry: Retries of a call on 429 (honouring ``Retry-After``), 5xx, timeouts and network errors (default:
            a :class:`~hubroute._utils.retry.RetryPolicy`, the crawler's).
        concurrency: Calls made at once by :meth:`generate_batch`.
    """

    def __init__(
        self,
        model: str,
        token: str | None = None,
        *,
        max_tokens: int = 512,
        temperature: float = 0.6,
        client: Any = None,
        fallback: PromptGenerator | None = None,
        retry: RetryPolicy | None = None,
        concurrency: int = 4,
    ) -> None:
        super().__init__(fallback)
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1.")
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        self.model = model
        self.token = token
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._client = client

    @property
    def client(self) -> Any:
        """The inference client (built on first use)."""
        if self._client is None:
            from huggingface_hub import InferenceClient

            self._client = InferenceClient(model=self.model, token=self.token)
        return self._client

    def _complete_batch(self, instructions: list[str], seed: int) -> list[str]:
        if len(instructions) <= 1 or self.concurrency == 1:
            return [self._complete(i, seed) for i in instructions]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="hubroute-prompts") as pool:
            return list(pool.map(lambda instruction: self._complete(instruction, seed), instructions))

    def _complete(self, instruction: str, seed: int) -> str:
        import httpx2
        from huggingface_hub.errors import HfHubHTTPError

        what = f"the inference model '{self.model}'"
        failures = (HfHubHTTPError, httpx2.HTTPError, TimeoutError)  # InferenceTimeoutError is both

        def status_of(err: Exception) -> int | None:
            return http_status(err) if isinstance(err, HfHubHTTPError) else None

        def transient(err: Exception) -> bool:
            status = status_of(err)
            return isinstance(err, failures) and (status is None or status in self.retry.statuses)

        def call() -> str:
            response = self.client.chat_completion(
                messages=[{"role": "user", "content": instruction}],
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                seed=seed,
            )
            return str(response.choices[0].message.content or "")

        try:
            return call_with_retries(call, self.retry, retryable=transient)
        except failures as err:
            if status_of(err) is not None:
                raise HubAccessError(describe_http_error(err, what)) from err
            raise HubAccessError(
                f"{what.capitalize()} did not answer ({type(err).__name__}: {err}) after "
                f"{self.retry.max_retries + 1} tries. Retry later, check the network and HF_ENDPOINT, or use "
                "--generator template."
            ) from err


def generator_from_spec(spec: str | None, token: str | None = None) -> PromptGenerator:
    """Build a generator from a command-line spec.

    Args:
        spec: ``"template"`` (default), ``"transformers:<model id or folder>"`` or ``"inference:<model id>"``.
        token: Hub token for the inference client.

    Raises:
        ValueError: an unknown spec.
    """
    if not spec or spec == "template":
        return TemplateGenerator()
    kind, _, target = spec.partition(":")
    if kind == "transformers" and target:
        return TransformersGenerator(target)
    if kind == "inference" and target:
        return InferenceClientGenerator(target, token=token)
    raise ValueError(
        f"Unknown prompt generator {spec!r}: use 'template', 'transformers:<model id or folder>' or "
        "'inference:<model id>'."
    )
