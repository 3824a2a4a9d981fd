"""The espeak-ng voices of the spoken digits and their split assignment.

A voice is (accent, variant, speed, pitch). Whole accents AND whole variants
are assigned to splits; a clip exists only for combinations whose accent and
variant belong to the same split, so validation/test voices are never heard in
training (neither their accent nor their variant):

  accents   train: en-gb, en-us, en-gb-x-rp, en-gb-x-gbclan, en-029
            validation: en-gb-x-gbcwmd
            test: en-gb-scotland, en-us-nyc
  variants  train: m2 m3 m4 m6 m7 klatt klatt3 Andy f1 f2 f4 f5 Annie linda
                   Alicia Belinda Steph anika  (18)
            validation: m5 f3
            test: klatt2 Andrea
  speeds    130, 175 words per minute (espeak-ng -s)
  pitches   30, 70 (espeak-ng -p, 0..99)

Clips per split = accents x variants x 2 speeds x 2 pitches x 10 words:
train 5*18*4*10 = 3600, validation 1*2*4*10 = 80, test 2*2*4*10 = 160.
"""

WORDS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven',
         'eight', 'nine')

SPLITS = ('train', 'validation', 'test')

# accent id (espeak-ng -v) -> (split, phrase used in captions).
ACCENTS = {
    'en-gb': ('train', 'a British accent'),
    'en-us': ('train', 'an American accent'),
    'en-gb-x-rp': ('train', 'a Received Pronunciation accent'),
    'en-gb-x-gbclan': ('train', 'a Lancashire accent'),
    'en-029': ('train', 'a Caribbean accent'),
    'en-gb-x-gbcwmd': ('validation', 'a West Midlands accent'),
    'en-gb-scotland': ('test', 'a Scottish accent'),
    'en-us-nyc': ('test', 'a New York accent'),
}

# variant id (espeak-ng "-v <accent>+<id>") -> (split, display name, gender).
# Ordinary-sounding voices only (no whisper/robot/croak novelty variants).
VARIANTS = {
    'm2': ('train', 'male2', 'male'),
    'm3': ('train', 'male3', 'male'),
    'm4': ('train', 'male4', 'male'),
    'm6': ('train', 'male6', 'male'),
    'm7': ('train', 'male7', 'male'),
    'klatt': ('train', 'klatt', 'male'),
    'f1': ('train', 'female1', 'female'),
    'f2': ('train', 'female2', 'female'),
    'f4': ('train', 'female4', 'female'),
    'f5': ('train', 'female5', 'female'),
    'Annie': ('train', 'annie', 'female'),
    'linda': ('train', 'linda', 'female'),
    # Added for speaker diversity (the test variants are one male, one female).
    'klatt3': ('train', 'klatt3', 'male'),
    'Andy': ('train', 'andy', 'male'),
    'Alicia': ('train', 'alicia', 'female'),
    'Belinda': ('train', 'belinda', 'female'),
    'Steph': ('train', 'steph', 'female'),
    'anika': ('train', 'anika', 'female'),
    'm5': ('validation', 'male5', 'male'),
    'f3': ('validation', 'female3', 'female'),
    'klatt2': ('test', 'klatt2', 'male'),
    'Andrea': ('test', 'andrea', 'female'),
}

# espeak-ng -s value -> adjective; -p value -> adjective.
SPEEDS = {130: 'slow', 175: 'fast'}
PITCHES = {30: 'low', 70: 'high'}

SAMPLE_RATE = 16000
MAX_SECONDS = 0.96
MAX_SAMPLES = int(SAMPLE_RATE * MAX_SECONDS)  # 15360


def voice_id(accent: str, variant: str, speed: int, pitch: int) -> str:
  """The voice identifier stored in the dataset, e.g. 'en-gb/m3/s130/p30'."""
  return f'{accent}/{variant}/s{speed}/p{pitch}'


def clip_name(accent: str, variant: str, speed: int, pitch: int,
              word: str) -> str:
  """File name of a clip inside speech/<split>/."""
  return f'{accent}__{variant}__s{speed}__p{pitch}__{word}.ogg'


def voices_of_split(split: str) -> list[tuple[str, str, int, int]]:
  """All (accent, variant, speed, pitch) of a split, in a fixed order."""
  return [(a, v, s, p)
          for a, (a_split, _) in ACCENTS.items() if a_split == split
          for v, (v_split, _, _) in VARIANTS.items() if v_split == split
          for s in SPEEDS for p in PITCHES]
