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

import random
import re
from typing import Any, Protocol, runtime_checkable

from .._utils.hub_errors import describe_http_error, http_status
from .._utils.text import split_sentences
from ..errors import HubAccessError
from ..routing.registry import model_key
from ..routing.taxonomy import normalize_model_name
from .crawl import CrawledModel, RetryPolicy, retry_after_seconds

__all__ = [
    "TASK_TEMPLATES",
    "PromptGenerator",
    "TemplateGenerator",
    "TransformersGenerator",
    "InferenceClientGenerator",
    "generator_from_spec",
    "parse_requests",
]

# Requests per pipeline tag, written like the requests users send (CMRBench's HuggingBench style).
# ``{lang}`` is replaced by a language the card names (else a common one).
TASK_TEMPLATES: dict[str, tuple[str, ...]] = {
    "text-generation": (
        "Write a short story about a lighthouse keeper who finds a message in a bottle.",
        "Can you explain step by step how to solve this math word problem?",
        "Help me draft a polite email asking my landlord to fix the heating.",
        "Answer this question and explain your reasoning.",
        "Can you help me debug this Python function that returns the wrong result?",
        "Give me a detailed plan for learning a new language in three months.",
    ),
    "text2text-generation": (
        "Rewrite this paragraph so that it is easier to read.",
        "Turn these notes into a well-formed paragraph.",
        "Generate a question from this passage.",
        "Paraphrase this sentence without changing its meaning.",
    ),
    "translation": (
        "Can you translate this {lang} paragraph into English?",
        "Please translate this English email into {lang}.",
        "Translate this product description into {lang} while keeping the tone.",
        "Convert this {lang} dialogue into natural English.",
    ),
    "summarization": (
        "Please give me a short summary of this news article.",
        "Summarize the key points of this meeting transcript.",
        "Can you condense this long report into a few sentences?",
        "Write a one-paragraph summary of this {lang} blog post.",
    ),
    "question-answering": (
        "Based on this passage, who founded the company?",
        "Find the answer to my question in this paragraph.",
        "Can you answer this question using the text I provide?",
        "What does this document say about the refund policy?",
    ),
    "table-question-answering": (
        "From this table, which region had the highest sales last year?",
        "Look at this spreadsheet and tell me the average price per item.",
        "Which row of this table has the lowest value in the third column?",
        "Answer my question using the data in this table.",
    ),
    "text-classification": (
        "Is the sentiment of this review positive or negative?",
        "Classify this news headline into a topic category.",
        "Does this message contain toxic or offensive language?",
        "Tell me which category this customer complaint belongs to.",
    ),
    "zero-shot-classification": (
        "Which of these labels fits this text best: sports, politics or technology?",
        "Does the first sentence entail the second one?",
        "Classify this paragraph into categories I choose on the fly.",
        "Is there a contradiction between these two statements?",
    ),
    "token-classification": (
        "Extract the names of people and organizations from this article.",
        "Tag every location mentioned in this travel blog.",
        "Find all the dates and amounts in this invoice text.",
        "Label the parts of speech in this sentence.",
    ),
    "fill-mask": (
        "Which word best fills the blank in this sentence?",
        "Predict the missing word in this {lang} sentence.",
        "Complete the masked token in this phrase.",
    ),
    "feature-extraction": (
        "Turn these sentences into embeddings for my search index.",
        "I need vector representations of these documents for clustering.",
        "Embed these product descriptions so I can find similar items.",
        "Compute embeddings for these {lang} texts.",
    ),
    "sentence-similarity": (
        "How similar are these two sentences in meaning?",
        "Find the documents most related to my question.",
        "Retrieve the passages that best match this query.",
        "Which of these FAQ entries matches the user's question?",
    ),
    "text-ranking": (
        "Rank these search results by how relevant they are to my question.",
        "Which of these passages best answers the query?",
        "Re-order these documents from most to least relevant.",
        "Score how well each candidate answer matches the question.",
    ),
    "conversational": (
        "Let's chat about planning a weekend trip.",
        "Can you keep a friendly conversation going with me?",
        "Respond to this customer message in a helpful tone.",
    ),
    "automatic-speech-recognition": (
        "Transcribe this interview recording into text.",
        "Can you convert this {lang} voice memo into written text?",
        "What is being said in this audio clip?",
        "Generate subtitles with timestamps for this lecture recording.",
        "I recorded a meeting; please transcribe it accurately.",
    ),
    "text-to-speech": (
        "Read this paragraph aloud in a natural voice.",
        "Turn this text into speech for my podcast intro.",
        "Can you generate a {lang} voice-over for this script?",
        "Create an audio version of this bedtime story.",
        "Synthesize this announcement with a calm, friendly voice.",
    ),
    "text-to-audio": (
        "Generate the sound of rain falling on a tin roof.",
        "Create a short background music loop for my video.",
        "Produce an audio clip of birds singing in a forest.",
        "Compose a calm piano melody from this description.",
    ),
    "audio-to-audio": (
        "Remove the background noise from this recording.",
        "Separate the vocals from the music in this track.",
        "Enhance the speech quality of this phone call audio.",
        "Convert my voice in this clip to sound like another speaker.",
    ),
    "audio-classification": (
        "What kind of sound is in this audio clip?",
        "Which language is spoken in this recording?",
        "Identify the bird species singing in this clip.",
        "Detect the emotion of the speaker in this audio.",
    ),
    "voice-activity-detection": (
        "When is someone speaking in this recording?",
        "How many people are speaking in this audio file?",
        "Mark the segments of this call that contain speech.",
    ),
    "audio-text-to-text": (
        "Listen to this audio and answer my question about it.",
        "Transcribe this audio message and summarize its main topic.",
        "What is the speaker's tone in this recording, and what do they ask for?",
    ),
    "image-classification": (
        "What is the main object in this photo?",
        "Classify this picture into one of my categories.",
        "Is this image of a cat or a dog?",
        "Which species of plant is shown in this picture?",
    ),
    "zero-shot-image-classification": (
        "Which of these labels describes this photo best?",
        "Find the images that match the description 'a sunset over the ocean'.",
        "Does this picture show a beach, a forest or a city?",
        "Match this image with the most fitting caption from my list.",
    ),
    "object-detection": (
        "Detect all the cars in this parking lot photo.",
        "Find and box every person in this crowd picture.",
        "Locate the objects on this table and tell me where they are.",
        "How many bicycles are in this street image?",
    ),
    "zero-shot-object-detection": (
        "Find the red umbrella in this photo.",
        "Locate everything in this image that matches 'coffee mug'.",
        "Detect the objects I describe in words in this picture.",
        "Box the white cat in this bedroom photo.",
    ),
    "image-segmentation": (
        "Separate the foreground from the background in this photo.",
        "Give me a pixel mask for every object in this street scene.",
        "Remove the background of this product picture.",
        "Segment the different regions of this aerial image.",
    ),
    "mask-generation": (
        "Generate a mask for the object I click on in this image.",
        "Create masks for all the objects in this photo.",
        "Cut out the largest object in this scene.",
    ),
    "depth-estimation": (
        "Estimate the depth map of this room photo.",
        "How far away are the objects in this street image?",
        "Produce a depth map for this landscape picture.",
        "Recover the 3D layout of this scene from one image.",
    ),
    "keypoint-detection": (
        "Find the body keypoints of the person in this photo.",
        "Mark the joints of the athlete in this picture.",
        "Detect facial landmarks in this portrait.",
        "Match keypoints between these two images.",
    ),
    "image-feature-extraction": (
        "Extract visual features from this image for similarity search.",
        "Compute an embedding of this photo to find similar pictures.",
        "I need image representations of these photos for clustering.",
        "Give me dense features of this image for a downstream task.",
    ),
    "image-to-text": (
        "Write a caption for this photo.",
        "Read the text in this scanned document.",
        "Describe what is happening in this picture.",
        "Extract the text from this receipt image.",
    ),
    "image-text-to-text": (
        "What is shown in this image, and what might it mean?",
        "Look at this chart and explain the trend.",
        "Answer my question about this screenshot.",
        "Read this document image and summarize it.",
        "Describe this photo in detail.",
    ),
    "visual-question-answering": (
        "What color is the car in this picture?",
        "How many people are in this photo?",
        "Answer this question about the image I uploaded.",
        "What does the sign in this picture say?",
    ),
    "document-question-answering": (
        "What is the total amount on this invoice?",
        "Find the due date in this scanned contract.",
        "Answer my question using this PDF page.",
        "Who signed this form?",
    ),
    "visual-document-retrieval": (
        "Find the page of this report that shows the quarterly sales chart.",
        "Retrieve the documents that contain a diagram of the engine.",
        "Search these PDF pages for the one that answers my question.",
        "Which slide in this deck talks about the budget?",
    ),
    "video-text-to-text": (
        "What happens in this video?",
        "Summarize the main events of this clip.",
        "Answer my question about this video.",
        "Describe the actions of the people in this video.",
    ),
    "video-classification": (
        "What activity is shown in this video clip?",
        "Classify this video into a category.",
        "Which sport is being played in this clip?",
        "Recognize the action in this short video.",
    ),
    "text-to-image": (
        "Generate an image of a magical forest at night with glowing mushrooms.",
        "Create a picture of a cozy cabin in the snowy mountains.",
        "Draw a futuristic city skyline at sunset.",
        "Produce a watercolor illustration of a fox in a meadow.",
        "Make a photorealistic image of a cup of coffee on a wooden table.",
    ),
    "image-to-image": (
        "Turn this photo into a watercolor painting.",
        "Edit this picture to change the sky to sunset colors.",
        "Remove the logo from this image and fill in the background.",
        "Upscale this low-resolution image.",
        "Restore this old damaged photograph.",
    ),
    "unconditional-image-generation": (
        "Generate a random realistic face.",
        "Create new images that look like my dataset.",
        "Produce a random landscape picture.",
    ),
    "text-to-video": (
        "Generate a video of a dragon flying through a stormy sky.",
        "Make a short clip of waves crashing on a beach at sunset.",
        "Create a video of a car driving through a neon-lit city at night.",
        "Produce a five-second animation of a blooming flower.",
    ),
    "image-to-video": (
        "Animate this photo into a short video.",
        "Turn this still image into a moving clip.",
        "Make the clouds in this picture move.",
        "Create a video that starts from this image.",
    ),
    "video-to-video": (
        "Change the style of this video to look like an anime.",
        "Enhance the quality of this video clip.",
        "Edit this video so that it takes place in winter.",
        "Increase the frame rate of this clip.",
    ),
    "text-to-3d": (
        "Create a 3D model of a wooden chair.",
        "Generate a 3D asset of a fantasy sword from this description.",
        "Design a 3D character with a hat and a scarf.",
    ),
    "image-to-3d": (
        "Turn this product photo into a 3D model.",
        "Reconstruct a 3D mesh from this picture.",
        "Create a 3D asset from this sketch.",
    ),
    "any-to-any": (
        "Look at this image and answer with speech.",
        "Understand this audio and video and reply in text.",
        "Handle text, images and audio in one conversation.",
    ),
    "tabular-classification": (
        "Predict whether this loan applicant will default.",
        "Classify these customer records into churn or no churn.",
        "Tell me which class each row of this dataset belongs to.",
    ),
    "tabular-regression": (
        "Predict the price of this house from its features.",
        "Estimate the value for each row of this table.",
        "Forecast the sales for these store records.",
    ),
    "time-series-forecasting": (
        "Forecast next month's values of this time series.",
        "Predict the electricity demand for the next week.",
        "What will this sensor reading look like tomorrow?",
    ),
    "reinforcement-learning": (
        "Train an agent to play this game.",
        "Which action should the agent take in this state?",
        "Control this robot arm to pick up the cube.",
    ),
    "robotics": (
        "Control this robot to pick up the object on the table.",
        "Plan the movements of a robot arm for this task.",
    ),
    "graph-ml": (
        "Predict the properties of this molecule graph.",
        "Classify the nodes of this network.",
    ),
}
_GENERIC_TEMPLATES = (
    "Can you help me with {task}?",
    "I need help with {task}.",
    "Please do {task} on my data.",
)
_LANGUAGES = (
    "english french german spanish italian portuguese dutch polish russian ukrainian czech turkish arabic "
    "hebrew persian hindi bengali urdu tamil chinese mandarin cantonese japanese korean vietnamese thai "
    "indonesian malay swahili greek swedish norwegian danish finnish hungarian romanian catalan basque"
).split()
_DEFAULT_LANGUAGES = ("French", "German", "Spanish", "Japanese", "Chinese")
_MODEL_SUBJECT = (
    r"(?:it|this model|the model|our model|this checkpoint|the checkpoint|a model|this repository)"
)
_REWRITES: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (re.compile(rf"^{_MODEL_SUBJECT}\s+(?:is|was)\s+(?:a|an|the)\s+(.+)$", re.I),
     ("I'm looking for a {0}", "Find me a {0}", "I need a {0}")),
    (re.compile(rf"^{_MODEL_SUBJECT}\s+(?:can|could|will)\s+(.+)$", re.I), ("Can you {0}?", "I want to {0}.")),
    (re.compile(rf"^{_MODEL_SUBJECT}\s+(?:is|was)\s+(?:designed|trained|fine-?tuned|built|made|optimi[sz]ed|"
                rf"intended|meant)\s+(?:to|for)\s+(.+)$", re.I),
     ("Can you help me {0}?", "I need help to {0}.")),
    (re.compile(rf"^{_MODEL_SUBJECT}\s+(?!(?:is|was|has|does|this|its|as)\b)(\w+s\b.+)$", re.I),
     ("I need something that {0}", "Is there a way that {0}?")),
)  # fmt: skip
_GENERIC_WRAPPERS = ("I need help with this: {0}", "Looking for something that fits this: {0}", "{0}")
_VERBS = frozenset(
    "analyse analyze annotate answer build caption categorize chat classify clean compare complete compose compute "
    "convert create describe design detect draft edit embed enhance estimate evaluate explain extract find "
    "forecast generate identify improve label locate make map match measure parse plan predict produce rank "
    "read recognize recognise reconstruct remove render rewrite retrieve score search segment separate solve "
    "summarize summarise synthesize tag track train transcribe transform translate turn upscale write".split()
)
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

    def generate(self, model: CrawledModel, count: int, seed: int = 0) -> list[str]:
        """Ask the language model for ``count`` requests; templates fill in what it does not give."""
        prompts = parse_requests(self._complete(self.instruction(model, count), seed), model, count)
        if len(prompts) < count:
            seen = {p.lower() for p in prompts}
            extra = [p for p in self.fallback.generate(model, count, seed) if p.lower() not in seen]
            prompts += extra[: count - len(prompts)]
        return prompts


class TransformersGenerator(_LLMGenerator):
    """Prompts written by a local ``transformers`` text-generation model.

    Args:
        model: A model id or a local folder (loaded with ``transformers.pipeline("text-generation")``).
        max_new_tokens: Tokens generated per model.
        temperature: Sampling temperature (0: greedy).
        device: Device of the pipeline (default: transformers' choice).
        pipeline: An already built text-generation pipeline (``model`` is then only a label).
        fallback: Generator used to fill in (default: :class:`TemplateGenerator`).
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
    ) -> None:
        super().__init__(fallback)
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
        from transformers import set_seed

        set_seed(seed)
        pipe = self.pipeline
        tokenizer = getattr(pipe, "tokenizer", None)
        chat = tokenizer is not None and getattr(tokenizer, "chat_template", None)
        inputs: Any = [{"role": "user", "content": instruction}] if chat else instruction
        sampling = (
            {"do_sample": True, "temperature": self.temperature}
            if self.temperature > 0
            else {"do_sample": False}
        )
        output = pipe(inputs, max_new_tokens=self.max_new_tokens, return_full_text=False, **sampling)
        generated = output[0]["generated_text"] if output else ""
        if isinstance(generated, list):  # chat output: the list of messages
            generated = generated[-1].get("content", "") if generated else ""
        return str(generated)


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
            the crawler's :class:`~hubroute.hub.crawl.RetryPolicy`).
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
    ) -> None:
        super().__init__(fallback)
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

    def _complete(self, instruction: str, seed: int) -> str:
        import httpx2
        from huggingface_hub.errors import HfHubHTTPError

        what = f"the inference model '{self.model}'"
        attempt = 0
        while True:
            try:
                response = self.client.chat_completion(
                    messages=[{"role": "user", "content": instruction}],
                    max_tokens=self.max_tokens,
                    temperature=self.temperature,
                    seed=seed,
                )
                return str(response.choices[0].message.content or "")
            except (HfHubHTTPError, httpx2.HTTPError, TimeoutError) as err:  # InferenceTimeoutError is both
                status = http_status(err) if isinstance(err, HfHubHTTPError) else None
                if (
                    status is not None and status not in self.retry.statuses
                ) or attempt >= self.retry.max_retries:
                    if status is not None:
                        raise HubAccessError(describe_http_error(err, what)) from err
                    raise HubAccessError(
                        f"{what.capitalize()} did not answer ({type(err).__name__}: {err}) after {attempt + 1} "
                        "tries. Retry later, check the network and HF_ENDPOINT, or use --generator template."
                    ) from err
                self.retry.sleep(
                    self.retry.delay(attempt, retry_after_seconds(getattr(err, "response", None)))
                )
                attempt += 1


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
