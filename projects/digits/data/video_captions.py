"""Captions and questions of digits_video (pure functions, no I/O).

A clip shows one digit doing one motion (motions.MOTIONS). Its captions name
both, e.g. 'a three moving to the left'; its questions are of two groups:

  content  answerable from the frames in any order
    digit        'what digit is shown?'                       -> '3'
    kind         'is it sliding, turning or changing size?'   -> 'turning'
    match        'is the spoken number the one shown?'        -> 'yes' / 'no'
                 (needs the audio track `qa_speech` as well)
  order    answerable only from the order of the frames: the reversed clip
           has the same frames and the opposite answer (motions.py)
    direction    slide:  'which way does it move?'            -> 'left' ...
                 turn:   'which way does it turn?'
                                              -> 'clockwise' / 'anticlockwise'
                 resize: 'is it growing or shrinking?'        -> 'growing' ...

With the frames shuffled in time a perfect model keeps the content answers
and falls to chance (50%: the kind is still visible) on the direction.
"""
from projects.digits.data import motions
from projects.digits.data import voices

WORDS = voices.WORDS
QUESTION_TYPES = ('digit', 'kind', 'match', 'direction')
ORDER_TYPES = ('direction',)  # the rest are content questions
CONTENT_TYPES = tuple(t for t in QUESTION_TYPES if t not in ORDER_TYPES)

# Motion -> phrasings; index 0 is the canonical one ('a three <phrase>').
_PHRASES = {
    'left': ('moving to the left', 'sliding left', 'going left'),
    'right': ('moving to the right', 'sliding right', 'going right'),
    'up': ('moving up', 'sliding up', 'going up'),
    'down': ('moving down', 'sliding down', 'going down'),
    'clockwise': ('turning clockwise', 'rotating clockwise',
                  'spinning clockwise'),
    'anticlockwise': ('turning anticlockwise', 'rotating anticlockwise',
                      'spinning anticlockwise'),
    'growing': ('growing', 'getting bigger', 'growing larger'),
    'shrinking': ('shrinking', 'getting smaller', 'shrinking away'),
}
_KIND_ANSWER = {'slide': 'sliding', 'turn': 'turning',
                'resize': 'changing size'}
_DIRECTION_QUESTION = {'slide': 'which way does it move?',
                       'turn': 'which way does it turn?',
                       'resize': 'is it growing or shrinking?'}
QUESTIONS = {
    'digit': 'what digit is shown?',
    'kind': 'is it sliding, turning or changing size?',
    'match': 'is the spoken number the one shown?',
}


def motion_phrase(motion: str) -> str:
  """The canonical phrase of a motion, e.g. 'moving to the left'."""
  return _PHRASES[motion][0]


def video_captions(digit: int, motion: str) -> list[str]:
  """Four phrasings; the first is the canonical 'a <word> <motion phrase>'.

  Every phrasing names the digit and the motion's direction, so no caption
  is right for a clip played backwards.
  """
  word, num = WORDS[digit], str(digit)
  p = _PHRASES[motion]
  return [
      f'a {word} {p[0]}',
      f'the digit {num} {p[1]}',
      f'a handwritten {word} {p[2]}',
      f'{num} {p[0]}',
  ]


def qa(digit: int, motion: str, spoken: int
       ) -> tuple[list[str], list[str], list[str]]:
  """Questions about a clip of `digit` doing `motion` and a clip of the
  spoken digit `spoken`.

  Returns:
    (questions, answers, question_types): aligned lists of length 4 in the
    order of QUESTION_TYPES.
  """
  kind = motions.KIND_OF[motion]
  questions = [QUESTIONS['digit'], QUESTIONS['kind'], QUESTIONS['match'],
               _DIRECTION_QUESTION[kind]]
  answers = [str(digit), _KIND_ANSWER[kind],
             'yes' if digit == spoken else 'no', motion]
  return questions, answers, list(QUESTION_TYPES)


def all_texts() -> list[str]:
  """Every caption, question and answer the builder can produce, sorted
  (the video tokenizer's corpus)."""
  texts = set()
  for digit in range(10):
    for motion in motions.MOTIONS:
      texts.update(video_captions(digit, motion))
      for spoken in (digit, (digit + 1) % 10):
        questions, answers, _ = qa(digit, motion, spoken)
        texts.update(questions + answers)
  return sorted(texts)


def _motion_phrases() -> list[tuple[str, str]]:
  """(phrase, motion) of every phrasing, longest first, so that e.g.
  'growing larger' is found before 'growing'."""
  pairs = [(p, m) for m, phrases in _PHRASES.items() for p in phrases]
  return sorted(pairs, key=lambda pm: -len(pm[0]))


def parse_caption(text: str) -> tuple[int | None, str | None]:
  """(digit, motion) a caption names, None for a part it does not name.

  Finds the first digit word or numeral and the longest motion phrasing of
  any caption this module writes, e.g. 'the digit 3 sliding left' ->
  (3, 'left'); 'a three' -> (3, None).
  """
  words = text.lower().replace(',', ' ').split()
  digit = next((WORDS.index(w) if w in WORDS else int(w)
                for w in words if w in WORDS or w in
                tuple(map(str, range(10)))), None)
  padded = f' {" ".join(words)} '
  motion = next((m for p, m in _motion_phrases() if f' {p} ' in padded),
                None)
  return digit, motion
