"""Prompts and training examples, rendered through the model's own chat template and encoded: the one module that
does it, for training, validation, scoring, generation, GRPO and the GGUF check alike.

    mcq-tune template --model_name_or_path MODEL_DIR [--system_prompt ""]   # prints the answer slot

``encode_prompt`` gives a question's prompt ids; training appends the answer to those very ids
(``encode_training_example``), so the tokens in front of the letter are the same in training, validation, scoring
and generation by construction. What is left to check is the template itself. ``find_answer_slot`` renders a probe
question with each answer A-D and requires that
  * the conversation with the answer starts with exactly the prompt's tokens (nothing merges across),
  * the very next token is the letter: one token, a different one per letter, nothing written before it
    (a template that puts an empty thinking block there would leave the model to generate it),
  * the template then closes the turn with an end token, which the answer loss covers and generation
    stops at.
Anything else is refused with the reason before a model is loaded. What does not fit is refused, never cut, with one
family of errors (``TooLong``): a prompt whose template and options exceed max_prompt_tokens (``PromptTooLong``; a
long question alone is shortened), a reasoning reply longer than max_answer_tokens (``ReplyTooLong``).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd

from mcqtune.data.questions import (ANSWER_COLUMN, ANSWER_PREFIX, LETTER_FIRST, LETTERS, REASONING_COLUMN,
                                    PromptStyle)
from mcqtune.errors import UserError

PROBE_ROW = {"question": "下列说法中正确的是", "option_A": "甲", "option_B": "乙", "option_C": "丙", "option_D": "丁"}


class TemplateError(UserError):
    """The chat template cannot carry a single-letter answer in the way training and answering need."""


class TooLong(UserError):
    """Rows that do not fit their token limit, refused together, never cut: ``needed`` holds (ID, tokens) of each,
    ``limit`` the limit they exceed."""

    def __init__(self, needed: list[tuple[str, int]], limit: int, message: str):
        self.needed, self.limit = needed, limit
        super().__init__(message)


class ReplyTooLong(TooLong):
    """Reasoning replies longer than max_answer_tokens (their answer comes last)."""

    def __init__(self, needed: list[tuple[str, int]], limit: int):
        most = max(tokens for _, tokens in needed)
        super().__init__(needed, limit, f"{len(needed)} reasoning repl{'y' if len(needed) == 1 else 'ies'} (first ID "
                         f"{needed[0][0]}) take more than max_answer_tokens {limit} (up to {most} tokens); set "
                         f"--max_answer_tokens {most} or more (a reasoning reply is never cut: its answer comes last)")


# ------------------------------------------------------------------- rendering and encoding prompts


def build_messages(row: dict[str, Any] | pd.Series, style: PromptStyle = PromptStyle(),
                   with_answer: bool = False) -> list[dict[str, str]]:
    """The chat for one question: [system], user, and the assistant's answer letter when ``with_answer`` (for a
    reasoning style, the row's reasoning then the answer prefix and the letter: ``reasoned_reply``; its question
    asks for reasoning, not for a reply that starts with the letter)."""
    template = style.user_template.replace(LETTER_FIRST, "") if style.reasoning else style.user_template
    user = template.format(
        question=row["question"], A=row["option_A"], B=row["option_B"], C=row["option_C"], D=row["option_D"]
    )
    if style.reasoning:
        user += style.reasoning_instruction
    messages = [{"role": "system", "content": style.system_prompt}] if style.system_prompt else []
    messages.append({"role": "user", "content": user})
    if with_answer:
        content = reasoned_reply(row[REASONING_COLUMN], row[ANSWER_COLUMN], style) if style.reasoning \
            else row[ANSWER_COLUMN]
        messages.append({"role": "assistant", "content": content})
    return messages


def reasoned_reply(reasoning: str, answer: str, style: PromptStyle) -> str:
    """A reasoning reply in the template's own form: a thinking block when thinking is on, else plain text; the
    answer prefix and the letter last."""
    reasoning = str(reasoning).strip()
    if style.enable_thinking:
        return f"<think>\n{reasoning}\n</think>\n\n{ANSWER_PREFIX}{answer}"
    return f"{reasoning}\n\n{ANSWER_PREFIX}{answer}"


def render_chat(tokenizer, messages: list[dict[str, str]], style: PromptStyle = PromptStyle(),
                add_generation_prompt: bool = True) -> str:
    """Every rendering of a chat goes through here, so every one passes the same template variables. A space that
    a generation prompt ends in (ERNIE 4.5's 'Assistant: ') is left to the reply: the model read it fused with the
    answer's first token (' A') in every conversation it was trained on."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         **style.template_kwargs)
    return text.rstrip(" ") if add_generation_prompt else text


def render_prompt(tokenizer, row: dict[str, Any] | pd.Series, style: PromptStyle = PromptStyle()) -> str:
    """The text the model continues at inference: the chat template with the generation prompt."""
    return render_chat(tokenizer, build_messages(row, style), style)


def to_prompt_completion(row: dict[str, Any] | pd.Series, style: PromptStyle = PromptStyle()) -> dict[str, list]:
    """A conversational prompt/completion record for TRL: the loss falls on the completion only."""
    *prompt, answer = build_messages(row, style, with_answer=True)
    return {"prompt": prompt, "completion": [answer]}


class PromptTooLong(TooLong):
    """The template and the options of some rows do not fit in max_prompt_tokens, even with an empty question."""

    def __init__(self, needed: list[tuple[str, int]], limit: int, advice: str = ""):
        most = max(tokens for _, tokens in needed)
        super().__init__(needed, limit, f"{len(needed)} question(s) (first ID {needed[0][0]}) do not fit in "
                         f"--max_prompt_tokens {limit} even with the question text shortened away: their template and "
                         f"options take up to {most} tokens, and options are never cut; raise --max_prompt_tokens to "
                         f"at least {most + 16}{advice}")


def encode_prompt(tokenizer, row, style: PromptStyle = PromptStyle(),
                  max_prompt_tokens: int | None = None) -> list[int]:
    """Token ids of the chat prompt for one row (the same ids in training and inference).

    A prompt longer than ``max_prompt_tokens`` keeps its template and options: the question text is cut
    (from its end) until it fits, so the answer position and the option letters are never lost; a row whose
    template and options alone do not fit is refused (PromptTooLong), never cut.
    """
    return encode_prompt_checked(tokenizer, row, style, max_prompt_tokens)[0]


def encode_prompt_checked(tokenizer, row, style: PromptStyle = PromptStyle(),
                          max_prompt_tokens: int | None = None) -> tuple[list[int], bool]:
    """``encode_prompt``'s ids, and whether the question had to be shortened to fit."""
    def render(question: str) -> list[int]:
        text = render_chat(tokenizer, build_messages({**dict(row), "question": question}, style), style)
        return tokenizer.encode(text, add_special_tokens=False)

    ids = render(row["question"])
    if max_prompt_tokens is None or len(ids) <= max_prompt_tokens:
        return ids, False
    question_ids = tokenizer.encode(row["question"], add_special_tokens=False)
    overflow = len(ids) - max_prompt_tokens
    keep = max(len(question_ids) - overflow - 2, 0)
    ids = render(tokenizer.decode(question_ids[:keep]) + "…")
    if len(ids) > max_prompt_tokens:  # the template and options alone are too long: refused, never cut
        raise PromptTooLong([(str(row.get("ID", "?")), len(render("…")))], max_prompt_tokens)
    return ids, True


def encode_prompts_checked(tokenizer, frame: pd.DataFrame, style: PromptStyle = PromptStyle(),
                           max_prompt_tokens: int | None = None) -> tuple[list[list[int]], int]:
    """Every row's prompt ids and how many questions were shortened; rows that cannot fit are refused together
    (one PromptTooLong naming how many, the first and the limit that would fit them all)."""
    prompts, shortened, too_long = [], 0, []
    for _, row in frame.iterrows():
        try:
            ids, cut = encode_prompt_checked(tokenizer, row, style, max_prompt_tokens)
        except PromptTooLong as err:
            too_long += err.needed
            continue
        prompts.append(ids)
        shortened += cut
    if too_long:
        raise PromptTooLong(too_long, max_prompt_tokens)
    return prompts, shortened


def encode_prompts(tokenizer, frame: pd.DataFrame, style: PromptStyle = PromptStyle(),
                   max_prompt_tokens: int | None = None) -> list[list[int]]:
    return encode_prompts_checked(tokenizer, frame, style, max_prompt_tokens)[0]


def build_sft_records(frame: pd.DataFrame, style: PromptStyle = PromptStyle()) -> list[dict[str, list]]:
    return [to_prompt_completion(row, style) for _, row in frame.iterrows()]


# -------------------------------------------------------------- the answer slot and training examples


@dataclass(frozen=True)
class AnswerSlot:
    """What every prompt is followed by: the letter's token, then the tokens that close the turn."""

    letter_ids: tuple[int, ...]  # the token of A, B, C, D right after the generation prompt
    end_ids: tuple[int, ...]  # what the template writes after the letter, up to its end-of-turn token
    prompt_tail: str  # the generation prompt's last characters, for the start-up line
    thinking_switch: bool  # the template renders differently with enable_thinking on and off
    end_from_template: bool  # False: the template closes nothing after the answer, so EOS is appended

    def describe(self, tokenizer, style: PromptStyle) -> str:
        ends = tokenizer.decode(list(self.end_ids))
        source = "" if self.end_from_template else " (EOS appended: the template writes nothing after the answer)"
        thinking = f"; thinking switch: {'on' if style.enable_thinking else 'off'}" if self.thinking_switch else ""
        return (f"answer slot: the letter is scored right after ...{self.prompt_tail!r}; A-D are tokens "
                f"{list(self.letter_ids)}; the loss covers the letter and {ends!r}{source}{thinking}")


def render_or_refuse(tokenizer, messages: list[dict], style: PromptStyle, add_generation_prompt: bool) -> str:
    """``render_chat``, with a template's own refusal (Gemma 2 and Mistral refuse a system turn) as one line."""
    from jinja2 import TemplateError as JinjaError

    try:
        return render_chat(tokenizer, messages, style, add_generation_prompt)
    except JinjaError as err:
        hint = " Set system_prompt to an empty string (--system_prompt '')." if messages[0]["role"] == "system" \
            else ""
        reason = str(err).rstrip(".")
        raise TemplateError(f"the model's chat template refuses this conversation: {reason}.{hint}") from None


def special_ids(tokenizer) -> set[int]:
    ids = {i for i, token in tokenizer.added_tokens_decoder.items() if getattr(token, "special", False)}
    return ids | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())


def _answer_tokens(tokenizer, style: PromptStyle, letter: str, prompt_text: str, prompt_ids: list[int]) -> list[int]:
    """The tokens the template puts after the prompt when ``letter`` is the answer; refuses a bad template."""
    messages = build_messages({**PROBE_ROW, ANSWER_COLUMN: letter}, style, with_answer=True)
    full_text = render_or_refuse(tokenizer, messages, style, add_generation_prompt=False)
    if not full_text.startswith(prompt_text):
        at = next(i for i, (a, b) in enumerate(zip(prompt_text + "\0", full_text)) if a != b)
        raise TemplateError(f"the chat template renders the prompt differently once the answer follows (from "
                            f"{prompt_text[max(at - 20, 0):at + 20]!r} to {full_text[max(at - 20, 0):at + 20]!r})")
    written = full_text[len(prompt_text):]
    if not written.lstrip(" ").startswith(letter):
        before = written[:written.find(letter)] if letter in written else written
        switch = (" Its thinking switch is on: use enable_thinking false for direct answers, or --mode reason to let "
                  "it think.") if style.enable_thinking else ""
        raise TemplateError(f"the chat template writes {before!r} between the generation prompt and the answer; "
                            f"the model would have to generate it, so the answer letter is not the next token."
                            f"{switch}")
    ids = tokenizer.encode(full_text, add_special_tokens=False)
    if ids[:len(prompt_ids)] != prompt_ids:
        raise TemplateError(f"the answer {letter!r} merges with the prompt's last token "
                            f"({tokenizer.decode(prompt_ids[-1:])!r}): it cannot be scored at one position")
    rest = ids[len(prompt_ids):]
    if not rest or tokenizer.decode(rest[:1]).strip() != letter:
        raise TemplateError(f"the answer {letter!r} is not one token after the prompt (it is "
                            f"{[tokenizer.decode([t]) for t in rest[:3]]})")
    return rest


def _closing(tokenizer, rest: Sequence[int]) -> tuple[tuple[int, ...], bool]:
    """The tokens after the letter up to the template's end-of-turn token (a special token)."""
    specials = special_ids(tokenizer)
    for i, token in enumerate(rest[1:], start=1):
        if token in specials:
            return tuple(rest[1:i + 1]), True
    if tokenizer.eos_token_id is None:
        raise TemplateError("the chat template writes no end-of-turn token after the answer and the tokenizer "
                            "has no EOS token: generation could not stop")
    return (tokenizer.eos_token_id,), False


THINK_OPEN = "<think>"


def opens_thinking(prompt_text: str) -> bool:
    """The generation prompt itself opens the thinking block (DeepSeek-R1-Distill's template does)."""
    return prompt_text.rstrip().endswith(THINK_OPEN)


def closing_letter_ids(tokenizer) -> list[int]:
    """The token of each letter right after the answer prefix; refused unless each is one token of its own."""
    prefix = tokenizer.encode(ANSWER_PREFIX, add_special_tokens=False)
    found = []
    for letter in LETTERS:
        ids = tokenizer.encode(ANSWER_PREFIX + letter, add_special_tokens=False)
        if ids[:len(prefix)] != prefix or len(ids) != len(prefix) + 1:
            raise TemplateError(f"the tokenizer does not write {ANSWER_PREFIX + letter!r} as the prefix then one "
                                "letter token, so a closed reasoning reply cannot be scored")
        found.append(ids[-1])
    if len(set(found)) != len(LETTERS):
        raise TemplateError("the letters A-D share a token after the answer prefix")
    return found


def _reasoning_slot(tokenizer, style: PromptStyle, prompt_text: str) -> AnswerSlot:
    """The slot of a template whose generation prompt opens a thinking block: replies reason, so the letters are
    the tokens after the answer prefix, and the turn ends where the template closes an assistant reply."""
    messages = build_messages({**PROBE_ROW, ANSWER_COLUMN: "A", REASONING_COLUMN: "想一想。"}, style,
                              with_answer=True)
    full_text = render_or_refuse(tokenizer, messages, style, add_generation_prompt=False)
    at = full_text.rfind(ANSWER_PREFIX + "A")
    if at < 0:
        raise TemplateError("the chat template drops the answer from the assistant's turn")
    rest = tokenizer.encode(full_text[at:], add_special_tokens=False)
    prefix = len(tokenizer.encode(ANSWER_PREFIX, add_special_tokens=False))
    end_ids, from_template = _closing(tokenizer, rest[prefix:])
    letter_ids = tuple(closing_letter_ids(tokenizer))
    return AnswerSlot(letter_ids, end_ids, prompt_text[-48:], False, from_template)


@functools.lru_cache(maxsize=8)
def find_answer_slot(tokenizer, style: PromptStyle = PromptStyle()) -> AnswerSlot:
    """The answer slot of ``tokenizer``'s chat template under ``style``; refuses with the reason. A reasoning
    style's slot is its direct form's: the reply ends its turn the same way, its letter comes later; a template
    whose generation prompt opens a thinking block (DeepSeek-R1-Distill) answers by reasoning only."""
    if style.reasoning:
        prompt_text = render_or_refuse(tokenizer, build_messages(PROBE_ROW, style), style, add_generation_prompt=True)
        if opens_thinking(prompt_text):
            return _reasoning_slot(tokenizer, style, prompt_text)
        style = dataclasses.replace(style, reasoning=False, enable_thinking=False)
    prompt_text = render_or_refuse(tokenizer, build_messages(PROBE_ROW, style), style, add_generation_prompt=True)
    if opens_thinking(prompt_text):
        raise TemplateError("the chat template's generation prompt opens a thinking block (<think>), so the model "
                            "reasons before any answer: answer with --mode reason (train_grpo.py --reasoning true); "
                            "direct scoring and training on direct answers are not possible with this template")
    prompt_ids = tokenizer.encode(prompt_text, add_special_tokens=False)
    letter_ids, closing = [], set()
    for letter in LETTERS:
        rest = _answer_tokens(tokenizer, style, letter, prompt_text, prompt_ids)
        letter_ids.append(rest[0])
        closing.add(_closing(tokenizer, rest))
    if len(set(letter_ids)) != len(LETTERS):
        raise TemplateError(f"the letters A-D share tokens after the prompt ({letter_ids}): they cannot be told apart")
    if len(closing) != 1:
        raise TemplateError("the chat template closes the answer differently depending on the letter")
    (end_ids, from_template), = closing
    flipped = PromptStyle(style.system_prompt, style.user_template, not style.enable_thinking)
    switch = render_or_refuse(tokenizer, build_messages(PROBE_ROW, flipped), flipped, True) != prompt_text
    return AnswerSlot(tuple(letter_ids), end_ids, prompt_text[-48:], switch, from_template)


def encode_training_example(tokenizer, row, style: PromptStyle = PromptStyle(), max_prompt_tokens: int | None = None,
                            max_answer_tokens: int | None = None) -> dict:
    """``input_ids`` and ``completion_mask`` for one training row: the inference prompt's ids, then the answer
    letter's token and the template's end-of-turn tokens (the loss falls on exactly these); and whether the
    question was shortened (``question_shortened``) or the answer cut (``answer_cut``) to fit."""
    answer = str(row[ANSWER_COLUMN])
    if answer not in LETTERS:
        raise ValueError(f"answer {answer!r} is not one of {', '.join(LETTERS)}")
    prompt_ids, shortened = encode_prompt_checked(tokenizer, row, style, max_prompt_tokens)
    if style.reasoning:
        completion_ids = reasoning_completion(tokenizer, row, style)
        if max_answer_tokens is not None and len(completion_ids) > max_answer_tokens:
            raise ReplyTooLong([(str(row.get("ID", "?")), len(completion_ids))], max_answer_tokens)
        return {"input_ids": prompt_ids + completion_ids,
                "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids),
                "question_shortened": shortened, "answer_cut": False}
    slot = find_answer_slot(tokenizer, style)
    completion_ids = [slot.letter_ids[LETTERS.index(answer)], *slot.end_ids]
    cut = max_answer_tokens is not None and len(completion_ids) > max_answer_tokens
    if cut:
        completion_ids = completion_ids[:max_answer_tokens]
    return {"input_ids": prompt_ids + completion_ids,
            "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids),
            "question_shortened": shortened, "answer_cut": cut}


def reasoning_completion(tokenizer, row, style: PromptStyle) -> list[int]:
    """The tokens the template writes after the prompt for a reasoning reply (the reasoning, the answer prefix
    and letter, the end of the turn); refused when the template changes the prompt or drops the reasoning (some
    reasoning templates strip the thinking block from assistant turns). The prompt ends with the generation
    prompt whether or not its question was shortened, so these tokens follow any version of it."""
    full_text = render_or_refuse(tokenizer, build_messages(row, style, with_answer=True), style, False)
    prompt_text = render_or_refuse(tokenizer, build_messages(row, style), style, True)
    prompt_ids = tokenizer.encode(prompt_text, add_special_tokens=False)
    reasoning = str(row[REASONING_COLUMN]).strip()
    if opens_thinking(prompt_text):
        raise TemplateError("the chat template's generation prompt opens a thinking block that its assistant turns do "
                            "not keep, so reasoning replies cannot be trained on with it (answering them with --mode "
                            "reason works); pass a template that keeps the reasoning (--chat_template)")
    if not full_text.startswith(prompt_text):
        raise TemplateError("the chat template renders the prompt differently once a reasoning reply follows")
    written = full_text[len(prompt_text):]
    if reasoning not in written:
        raise TemplateError("the chat template drops the reasoning from the assistant's turn, so it cannot be "
                            "trained on; use a template that keeps it (--chat_template)")
    ids = tokenizer.encode(full_text, add_special_tokens=False)
    if ids[:len(prompt_ids)] != prompt_ids:
        raise TemplateError("a reasoning reply merges with the prompt's last token")
    rest = ids[len(prompt_ids):]
    specials = special_ids(tokenizer)
    end = next((i for i, token in enumerate(rest) if token in specials), None)
    return rest[:end + 1] if end is not None else rest + [tokenizer.eos_token_id]


def stop_token_ids(tokenizer, model=None, style: PromptStyle = PromptStyle()) -> list[int]:
    """What generation stops at: the template's end-of-turn token, EOS, pad and the model's own stop ids."""
    stops = [*find_answer_slot(tokenizer, style).end_ids[-1:], tokenizer.eos_token_id, tokenizer.pad_token_id]
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    stops += configured if isinstance(configured, list) else [configured]
    return list(dict.fromkeys(t for t in stops if t is not None))
