"""Instruction paraphrases for the synthetic world, and prompt files in the official format.

Each task has a set of training paraphrases (seen while the base model learns to follow
instructions) and a disjoint set of held-out paraphrases (only used to measure instruction
sensitivity). They vary wording, punctuation and capitalisation on purpose: the pilot found that
with five training paraphrases one held-out wording could fail completely.

Held-out paraphrases are recombinations of words that occur somewhere in the training
instructions (of any task). An unseen word would reach the tiny LLM as an untrained embedding, so a
failure would measure the tokenizer rather than paraphrase robustness; test_synth checks the cover.

Instructions never contain braces: the official model formats a prompt with ``str.format`` when it
holds ``{}``, so a stray brace would either be filled or raise.

Prompt files follow the official layout (``prompts/train_prompt.json`` and ``test_prompt.json``
in cantabile-kwok/SALMONN-AHAMask): a training file maps task -> list of templates, a test file maps
task -> one template, each template holding ``<Speech><SpeechHere></Speech>``. The official AHAMask
training file gives every task the single template ``"<Speech><SpeechHere></Speech> "``: no
instruction at all, the mask alone must select the task.
"""

from __future__ import annotations

SPEECH_TAG = "<Speech><SpeechHere></Speech>"
# Template used by the official config (model.prompt_template) to wrap every prompt.
PROMPT_TEMPLATE = "USER: {}\nASSISTANT:"
# The official AHAMask template: speech only, the trailing space kept as in the released prompt files.
NO_INSTRUCTION_TEMPLATE = SPEECH_TAG + " "

TRAIN_INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "asr": (
        "Transcribe the audio.",
        "Write down the symbols you hear, in order.",
        "what syllables are spoken? list them in order",
        "Recognize the speech and give me the transcription.",
        "TRANSCRIBE THE SPEECH.",
        "Please write out every symbol in the recording, separated by spaces.",
        "Give the transcript of this clip",
        "Listen and repeat the syllables, in the order they are spoken.",
        "Which symbols does the speaker say? Answer with the words only.",
        "transcription please!",
        "Can you tell me what is said in this audio?",
        "Convert the speech to text.",
    ),
    "gender": (
        "Is the voice low or high?",
        "What is the register of the speaker? Answer low or high.",
        "Tell me whether the speaker has a low voice or a high voice.",
        "low or high voice?",
        "Recognize the pitch register of the speaker.",
        "Is the pitch of this voice LOW or HIGH?",
        "Classify the speaker's voice as low or high.",
        "please say if the speaker's pitch is low or high",
        "What kind of voice does the speaker have: low or high?",
        "Answer with one word, low or high: how does the voice sound?",
        "Which register is the voice in?",
    ),
    "count": (
        "How many symbols are spoken?",
        "Count the syllables in the audio.",
        "How many syllables does the speaker say? Answer with a number word.",
        "count the symbols you hear",
        "Tell me the number of symbols in this recording.",
        "HOW MANY WORDS ARE IN THE CLIP?",
        "What is the number of syllables spoken, from two to six?",
        "Please count how many symbols the speaker says.",
        "Give the count of spoken symbols.",
        "how many syllables do you hear in the audio?",
    ),
    "loudness": (
        "Is the speech quiet or loud?",
        "How loud is the speaker? Answer quiet or loud.",
        "Tell me whether the recording is quiet or loud.",
        "quiet or loud?",
        "Classify the loudness of the voice.",
        "Is the speaker QUIET or LOUD?",
        "Please say if the audio sounds quiet or loud.",
        "What is the loudness of this clip?",
        "Recognize the volume of the speech: quiet or loud.",
        "Answer with one word: is the voice loud or quiet?",
    ),
    "asr_gender": (
        "Transcribe the audio, then say if the voice is low or high, separated by |",
        "Write down the symbols you hear, then the register of the voice (low or high), separated by a "
        "vertical bar.",
        "Give the transcription and then the pitch register, joined by |.",
        "transcribe the speech | low or high voice",
        "First the transcript, then low or high. Separate them with |.",
        "Recognize the speech and the register of the speaker; answer as transcription|register.",
        "TRANSCRIBE THE CLIP, THEN TELL ME IF THE VOICE IS LOW OR HIGH. USE | BETWEEN THE TWO ANSWERS.",
        "Please list the syllables spoken, followed by | and the register of the voice.",
        "What is said, and is the voice low or high? Answer: words|register",
        "Transcription first, register second, separated by a vertical bar.",
    ),
    "gender_asr": (
        "Say if the voice is low or high, then transcribe the audio, separated by |",
        "First the register of the voice (low or high), then the transcription, separated by a vertical bar.",
        "Give the pitch register and then the transcript, joined by |.",
        "low or high voice | transcribe the speech",
        "Register first, then the words spoken. Separate them with |.",
        "Recognize the register of the speaker and the speech; answer as register|transcription.",
        "TELL ME IF THE VOICE IS LOW OR HIGH, THEN TRANSCRIBE THE CLIP. USE | BETWEEN THE TWO ANSWERS.",
        "Please classify the voice as low or high, followed by | and the syllables spoken.",
        "Is the voice low or high, and what is said? Answer: register|words",
        "Register first, transcription second, separated by a vertical bar.",
    ),
    "asr_gender_json": (
        "Transcribe the audio and say if the voice is low or high. Answer in JSON with keys asr and gender.",
        "Give a JSON object with the transcription under asr and the register under gender.",
        "json output please: asr = the symbols spoken, gender = low or high",
        "Return JSON with two keys, asr and gender.",
        "Recognize the speech and the register of the speaker, and format the answer as JSON (keys: asr, "
        "gender).",
        "WRITE A JSON OBJECT WITH THE TRANSCRIPT AS ASR AND THE VOICE REGISTER AS GENDER.",
        "Please answer in JSON: the words you hear as asr, and low or high as gender.",
        "What is said and is the voice low or high? Reply with a JSON object.",
        "Output JSON containing the transcription (asr) and the pitch register (gender).",
        "In JSON format, give asr and gender for this clip.",
    ),
}

HELDOUT_INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "asr": (
        "Write out the transcript of the recording.",
        "what does the speaker say? give the words in order.",
        "Please transcribe this clip!",
        "List every symbol you hear, separated by spaces",
        "GIVE ME THE TRANSCRIPTION OF THE AUDIO.",
        "Tell me the symbols spoken in this recording, in order.",
        "Repeat what is said, with the words only.",
        "Convert this recording to text, please.",
        "which syllables are in the clip? list them.",
        "Recognize what the speaker says and write them down.",
    ),
    "gender": (
        "Does the speaker have a high voice or a low voice?",
        "Is this a low or a high voice? Answer with one word.",
        "tell me the register of the voice",
        "HIGH OR LOW PITCH?",
        "Classify the pitch of the speaker: low or high.",
        "What register does the speaker's voice have?",
        "Please recognize whether the voice is high or low.",
        "How does the speaker's voice sound, low or high?",
        "is the speaker's pitch high? or low?",
        "Say low or high for the voice in this clip.",
    ),
    "count": (
        "Count how many syllables are in this clip.",
        "What is the number of symbols in the audio?",
        "How many words does the speaker say?",
        "please give me the number of syllables you hear",
        "COUNT THE SPOKEN SYMBOLS.",
        "Tell me how many symbols are in the recording, from two to six.",
        "How many syllables are spoken in this clip? Answer with one word.",
        "Give the number of words spoken.",
        "count the syllables in the recording, please",
        "What is the count of symbols you hear?",
    ),
    "loudness": (
        "Is the recording loud or quiet?",
        "How loud does the speech sound?",
        "tell me the loudness of the speaker",
        "LOUD OR QUIET?",
        "Classify the volume of this recording: quiet or loud.",
        "Please recognize whether the voice is quiet or loud.",
        "What is the volume of the audio? Answer with one word.",
        "Does the speaker sound quiet? or loud?",
        "Say quiet or loud for the speech in this clip.",
        "is the clip quiet or loud",
    ),
    "asr_gender": (
        "Write out the transcript, then | and whether the speaker's pitch is low or high.",
        "Give me the words spoken and then the register, separated by |",
        "transcribe this recording, then say low or high, with a vertical bar between them",
        "First list the syllables you hear, then classify the voice as low or high. Use | between them.",
        "TRANSCRIPT | REGISTER, PLEASE.",
        "What does the speaker say, and how does the voice sound, low or high? Separate the two answers "
        "with |.",
        "Please give the transcription followed by a vertical bar and the pitch register.",
        "Recognize what is said, then the register of the voice, joined by |",
        "Tell me the symbols spoken in order, then | then low or high.",
        "Convert the speech to text, then give the register, separated by |.",
    ),
    "gender_asr": (
        "Say whether the speaker's pitch is low or high, then | and the transcript.",
        "Give me the register and then the words spoken, separated by |",
        "say low or high for the voice, then transcribe this recording, with a vertical bar between them",
        "First classify the voice as low or high, then list the syllables you hear. Use | between them.",
        "REGISTER | TRANSCRIPT, PLEASE.",
        "How does the voice sound, low or high, and what does the speaker say? Separate the two answers "
        "with |.",
        "Please give the pitch register followed by a vertical bar and the transcription.",
        "Recognize the register of the voice, then what is said, joined by |",
        "Tell me low or high, then |, then the symbols spoken in order.",
        "Classify the register, then convert the speech to text; separate them with |.",
    ),
    "asr_gender_json": (
        "Reply in JSON with keys asr and gender: the transcript and the register of the voice.",
        "Give me a JSON object: asr is what is said, gender is low or high.",
        "format the answer as json with the keys asr and gender",
        "Please return a JSON object with the words spoken under asr and the pitch register under gender.",
        "JSON, PLEASE: ASR AND GENDER.",
        "Transcribe this recording and classify the voice as low or high; answer with a JSON object "
        "(asr, gender).",
        "What does the speaker say, and how does the voice sound? Output JSON with two keys.",
        "Write the transcription as asr and the register as gender, in JSON format.",
        "Tell me the symbols spoken and low or high, as a JSON object with asr and gender keys.",
        "Return JSON containing asr and gender for the audio.",
    ),
}

INSTRUCTION_SETS = ("train", "heldout")


def task_instructions(task: str, which: str = "train") -> tuple[str, ...]:
    """Returns the paraphrases of one task.

    Args:
        task: task name, e.g. "asr" or "asr_gender_json".
        which: "train" or "heldout".

    Returns:
        The paraphrases, in a fixed order.

    Raises:
        ValueError: if the task or the set is unknown.
    """
    table = {"train": TRAIN_INSTRUCTIONS, "heldout": HELDOUT_INSTRUCTIONS}.get(which)
    if table is None:
        raise ValueError(f"which: expected one of {INSTRUCTION_SETS}, got {which!r}")
    if task not in table:
        raise ValueError(f"task: no instructions for {task!r}; known tasks: {sorted(table)}")
    return table[task]


def with_speech(instruction: str) -> str:
    """Puts an instruction after the speech placeholder, as in the official prompt files.

    Args:
        instruction: the instruction text ("" gives the no-instruction template).

    Returns:
        ``"<Speech><SpeechHere></Speech> " + instruction``.

    Example:
        >>> with_speech("Is the voice low or high?")
        '<Speech><SpeechHere></Speech> Is the voice low or high?'
    """
    return f"{SPEECH_TAG} {instruction}"


def prompt_files(tasks: list[str] | tuple[str, ...]) -> dict[str, dict[str, object]]:
    """Builds the contents of every prompt file of the world.

    Args:
        tasks: task names to include.

    Returns:
        File stem -> JSON content:
        ``train_prompt`` (task -> training templates), ``heldout_prompt`` (task -> held-out templates),
        ``test_prompt`` (task -> the first training template, the official single-template test form),
        ``ahamask_train_prompt`` (task -> [no-instruction template]) and ``ahamask_test_prompt``
        (task -> no-instruction template).

    Raises:
        ValueError: if a task has no instructions.
    """
    train = {t: [with_speech(i) for i in task_instructions(t, "train")] for t in tasks}
    heldout = {t: [with_speech(i) for i in task_instructions(t, "heldout")] for t in tasks}
    return {
        "train_prompt": train,
        "heldout_prompt": heldout,
        "test_prompt": {t: train[t][0] for t in tasks},
        "ahamask_train_prompt": {t: [NO_INSTRUCTION_TEMPLATE] for t in tasks},
        "ahamask_test_prompt": {t: NO_INSTRUCTION_TEMPLATE for t in tasks},
    }


def wrapped_halves(template: str) -> tuple[str, str]:
    """Splits a template, wrapped in :data:`PROMPT_TEMPLATE`, at the speech placeholder.

    These are the two text pieces the LLM sees around the audio tokens (the official prompt_wrap).

    Args:
        template: a prompt-file template holding ``<SpeechHere>`` once.

    Returns:
        (text before the audio, text after the audio).

    Raises:
        ValueError: if the placeholder does not occur exactly once.

    Example:
        >>> wrapped_halves("<Speech><SpeechHere></Speech> ")
        ('USER: <Speech>', '</Speech> \\nASSISTANT:')
    """
    parts = PROMPT_TEMPLATE.format(template).split("<SpeechHere>")
    if len(parts) != 2:
        raise ValueError(f"template must hold <SpeechHere> exactly once: {template!r}")
    return parts[0], parts[1]
