"""The semantic cache's second check: each rule on hand-made pairs, both ways (refuses / lets through)."""

import pytest

from alignkit.rag.match import (
    PlainCosine,
    RuleCheck,
    analyse,
    comparison_agrees,
    entities_agree,
    intents_agree,
    negation_agrees,
    no_antonym_swap,
    no_direction_swap,
    no_word_swap,
    normalise,
    numbers_agree,
    question_intent,
    second_check,
    stem,
    units_agree,
)


def rule(fn, a: str, b: str) -> str | None:
    return fn(analyse(a), analyse(b))


def test_normalise_is_the_exact_repeat_key():
    assert normalise("What is  the capital of France?") == normalise("what is the capital of france")
    assert normalise("Don’t panic!") == normalise("don't panic")
    assert normalise("How do I reset my password?") != normalise("How do I reset my username?")


def test_stem_is_consistent_across_inflections():
    assert stem("charges") == stem("charged") == stem("charging") == stem("charge")
    assert stem("dictionaries") == stem("dictionary")
    assert stem("Australia's") == stem("australia")
    assert stem("shipped") == stem("ship")
    assert stem("password") != stem("username")


@pytest.mark.parametrize(
    "text, numbers",
    [
        ("How do I undo the last three commits?", {"3"}),
        ("Find the square root of one hundred forty-four.", {"144"}),
        ("What's new in Python 3.12?", {"3.12"}),
        ("Who was the second person on the Moon?", {"2"}),
        ("When did World War II end?", {"2"}),
        ("Why does it render twice?", {"2"}),
        ("Can I return it after 1,000 days or 30 days?", {"1000", "30"}),
        ("What does 2>&1 mean in a shell command?", {"1", "2"}),
        ("How do I set a new one?", set()),  # a lone "one" is a pronoun
        ("Can I log in? I forgot it.", set()),  # "I" after a sentence start is not a roman numeral
    ],
)
def test_numbers_are_read_from_digits_words_ordinals_and_roman_numerals(text, numbers):
    assert analyse(text).numbers == numbers


def test_numbers_agree():
    assert (
        rule(numbers_agree, "How do I undo the last 3 commits in git?", "How can I revert the three latest git commits?") is None
    )
    assert (
        rule(numbers_agree, "What's new in Python 3.11?", "What's new in Python 3.12?") == "numbers differ: ['3.11'] vs ['3.12']"
    )
    assert rule(numbers_agree, "Can I return an item after 60 days?", "Can I return an item after 30 days?") is not None
    assert rule(numbers_agree, "When did World War I end?", "When did World War II end?") is not None
    assert rule(numbers_agree, "In what year did the Second World War finish?", "When did World War II end?") is None
    # the same numbers in another order
    assert (
        rule(numbers_agree, "What is 5 to the power of 3?", "What is 3 to the power of 5?")
        == "numbers in another order: 5 3 vs 3 5"
    )
    assert rule(numbers_agree, "What does 1>&2 mean in a shell command?", "What does 2>&1 mean in bash?") is not None
    assert rule(numbers_agree, "What is 5 to the power of three?", "What is 5 cubed, raised to the power of 3?") is None


@pytest.mark.parametrize(
    "a, b, agree",
    [
        ("Which countries don't require a visa?", "Where can I travel without a visa?", True),
        ("Which countries require a visa for US citizens?", "Which countries don't require a visa for US citizens?", False),
        ("Why can't I cancel my subscription?", "How can I cancel my subscription?", False),
        ("Which vegetables should not be refrigerated?", "Which veggies should never go in the fridge?", True),
        ("What countries can I visit visa-free?", "Which countries need no visa?", True),
        ("Is it safe to eat raw cookie dough?", "Can eating uncooked cookie dough make me sick?", True),
    ],
)
def test_negation_agrees(a, b, agree):
    assert (rule(negation_agrees, a, b) is None) == agree


@pytest.mark.parametrize(
    "a, b, agree",
    [
        ("How long does shipping take to Mexico?", "How long does shipping take to Canada?", False),
        ("How do I reverse a list in JavaScript?", "How do I reverse a list in Python?", False),
        ("How do I convert a string to an integer in Java?", "How do I convert a string to an integer in JavaScript?", False),
        ("Which city is Australia's capital?", "What is the capital of Australia?", True),
        ("Where is the seat of the Australian government?", "What is the capital of Australia?", True),
        ("Will the warranty cover repairs outside the US?", "Is the warranty valid outside the United States?", True),
        ("What was the end date of WWII?", "When did the Second World War end?", False),  # "Second" is no initial
        ("How do I parse a number in JS?", "How do I parse a number in JavaScript?", True),
        ("BatchNorm vs LayerNorm: what's the difference?", "How does batch normalization differ from layer normalization?", True),
        ("What makes GPUs useful for deep learning?", "Why are GPUs used for deep learning?", True),
        ("What is the role of the hidden state in an RNN?", "What does a recurrent neural network's hidden state do?", True),
        ("What is the maximum value of an int32?", "What is the maximum value of an int64?", False),
        ("How do I exit vim?", "How do I quit the Vim editor?", True),  # case does not matter
    ],
)
def test_entities_agree(a, b, agree):
    assert (rule(entities_agree, a, b) is None) == agree


def test_sentence_initial_capitals_are_not_names():
    assert analyse("Calculate fifteen percent of eighty.").entities == frozenset()
    assert analyse("Python list vs tuple").entities == frozenset()  # first word: its capital says nothing
    assert analyse("In Python, how do I reverse a list?").entities == {"Python"}
    assert analyse("What's the number of MB in one GB?").entities == frozenset()  # units, not names


@pytest.mark.parametrize(
    "a, b, agree",
    [
        ("How many kilometers is a marathon?", "How many miles is a marathon?", False),
        ("What is the boiling point of water in Celsius?", "What is the boiling point of water in Fahrenheit?", False),
        ("How can I change a temperature from °C to °F?", "How do I convert Celsius to Fahrenheit?", True),
        ("How many minutes does sunlight take to reach us?", "How long does light from the Sun take to reach Earth?", True),
        ("How many kilobytes are in a gigabyte?", "How many megabytes are in a gigabyte?", False),
        ("How many calories are in a banana?", "How much energy in kcal does a banana have?", True),
    ],
)
def test_units_agree(a, b, agree):
    assert (rule(units_agree, a, b) is None) == agree


@pytest.mark.parametrize(
    "a, b, agree",
    [
        ("How do I disable two-factor authentication?", "How do I enable two-factor authentication?", False),
        ("What is the minimum value of an int?", "What is the maximum value of an int?", False),
        ("When did the war start?", "When did the war end?", False),
        ("What is the difference between an encoder and a decoder?", "How does a decoder differ from an encoder?", True),
        ("Which ocean is the biggest?", "What is the largest ocean?", True),
        (
            "How do I stop a Docker container running in the background?",
            "How do I run a Docker container in the background?",
            False,
        ),
        # phrases: "turn on" / "turn off", "check-in" / "check-out"
        ("How do I turn on auto-renewal?", "How do I turn off auto-renewal?", False),
        ("What time is check-out at the hotel?", "What time is check-in at the hotel?", False),
        ("How do I switch on dark mode?", "How do I turn on dark mode?", True),
        # a negating prefix: "unsupervised" / "supervised", "non-linear" / "nonlinear" / "linear"
        ("What is unsupervised learning?", "What is supervised learning?", False),
        ("What is a non-autoregressive model?", "What is an autoregressive model?", False),
        ("Why is the sigmoid function nonlinear?", "Why is the sigmoid function linear?", False),
        ("Why do we need a non-linear activation?", "Why do we need a non-linear activation function?", True),
        ("How do I display an image?", "How do I play an image?", True),  # too short a rest ("play") to read a prefix
        # inflected forms count: "receiving" / "sending"; "stop running" has no "run" to oppose
        ("Why am I not receiving text messages?", "Why are my text messages not sending?", False),
        ("Why was the email not received?", "Why was the email not sent?", False),
        ("How do I stop the script from running?", "How can I stop my script while it is running?", True),
    ],
)
def test_no_antonym_swap(a, b, agree):
    assert (rule(no_antonym_swap, a, b) is None) == agree


@pytest.mark.parametrize(
    "a, b, agree",
    [
        ("How do I convert Fahrenheit to Celsius?", "How do I convert Celsius to Fahrenheit?", False),
        ("How do I convert an integer to a string in Go?", "How do I convert a string to an integer in Go?", False),
        ("How many pounds are in an ounce?", "How many ounces are in a pound?", False),
        ("What's the number of ounces per pound?", "How many ounces are in a pound?", True),
        ("A pound is how many ounces?", "How many ounces are in a pound?", True),  # no "in": no direction read
        ("How do I turn a string into an integer?", "How do I convert a string to an integer?", True),
        ("How do I format a date as DD/MM/YYYY in Python?", "How do I format a date as YYYY-MM-DD in Python?", False),
        ("How do I print a date as YYYY/MM/DD?", "How do I format a date as YYYY-MM-DD?", True),  # same order
        ("How many tablespoons are in a teaspoon?", "How many teaspoons are in a tablespoon?", False),
        # roles around other words, and whole phrases on each side
        ("How do I convert a NumPy array to a pandas DataFrame?", "How do I convert a pandas DataFrame to a NumPy array?", False),
        ("Can I substitute baking powder for baking soda?", "Can I substitute baking soda for baking powder?", False),
        ("Is Rust faster than Go?", "Is Go faster than Rust?", False),
        ("Can I use honey instead of sugar?", "Can I use sugar instead of honey?", False),
        ("Can I swap sugar for honey in a cake?", "Can I use honey instead of sugar in a cake?", True),  # not one word both
        ("How do I copy a file from a remote server to my computer?", "How do I copy a file to a remote server?", False),
        ("How do I download a file from a server?", "How do I get a file from a server?", True),
        ("What's the best way to clean red wine out of carpet?", "How do I remove a red wine stain from a carpet?", True),
        ("How many hectares are in an acre?", "How many acres are in a hectare?", False),  # area units
    ],
)
def test_no_direction_swap(a, b, agree):
    assert (rule(no_direction_swap, a, b) is None) == agree


@pytest.mark.parametrize(
    "a, b, agree",
    [
        ("How do I reset my username?", "How do I reset my password?", False),
        ("How do I sort a dictionary by key in Python?", "How do I sort a dictionary by value in Python?", False),
        ("How many miles is a half marathon?", "How many miles is a marathon?", False),  # words added
        ("What is the derivative of the softmax function?", "What is the softmax function?", False),
        ("How do I compare two dictionaries in Python?", "How do I merge two dictionaries in Python?", False),
        ("How much protein is in a medium banana?", "How many calories are in a medium banana?", False),
        ("What is the height of the Eiffel Tower?", "How tall is the Eiffel Tower?", True),  # synonyms
        ("How much do I pay to renew my passport?", "How much does it cost to renew a passport?", True),
        ("I forgot my password. How can I set a new one?", "How do I reset my password?", True),  # reworded
        ("What's the best way to reverse a list in Python?", "How do I reverse a list in Python?", True),  # frame words
        ("Can you name the writer of the novel Pride and Prejudice?", "Who wrote Pride and Prejudice?", True),
        # nearly one sentence: content words added count even where the small words changed
        (
            "How do I find the index of the largest element in a Python list?",
            "How do I find the index of an element in a Python list?",
            False,
        ),
        ("How do I apply my stashed changes in git?", "How do I stash my changes in git?", False),
        ("What does covariate shift mean?", "What is covariate shift?", True),  # "mean" re-asks the same
        ("How many bones does an adult human have?", "How many bones are in the adult human body?", True),  # not close
        ("How many grams are in a fluid ounce of water?", "How many grams are in an ounce?", False),  # articles ignored
        ("How do I add a new car to my car insurance policy?", "How do I add a new driver to my car insurance policy?", False),
        ("How do I list all columns of a table in PostgreSQL?", "How do I list all tables in PostgreSQL?", False),
        ("Reset password: how do I reset my password?", "How do I reset my password?", True),  # words said twice
        # the same content words in another order
        (
            "Why does the validation loss go down but the training loss go up?",
            "Why does the training loss go down but the validation loss go up?",
            False,
        ),
        (
            "Why does the training loss decrease but the validation loss increase?",
            "Why is my training loss decreasing while my validation loss is increasing?",
            True,
        ),
        ("By default, which port does HTTPS use?", "Which port does HTTPS use by default?", True),  # a phrase moved
    ],
)
def test_no_word_swap(a, b, agree):
    assert (rule(no_word_swap, a, b) is None) == agree


@pytest.mark.parametrize(
    "text, kind",
    [
        ("How do I fix the vanishing gradient problem?", "action"),
        ("I forgot my password. How can I set a new one?", "action"),  # the last question counts
        ("My payment was declined, what should I do?", "action"),
        ("As an adult, what is the most effective method for learning another language?", "action"),
        ("What's the best way to reverse a list in Python?", "action"),
        ("What is the vanishing gradient problem?", "define"),
        ("What does the acronym GDPR mean?", "define"),
        ("What causes hiccups?", "reason"),
        ("Why is the sky blue?", "reason"),
        ("How big should a validation set be?", "quantity"),
        ("If I pick standard delivery, how many days until my order arrives?", "quantity"),  # after a comma
        ("When did World War II end?", "time"),
        ("Who wrote Pride and Prejudice?", "person"),
        ("How is a recommender system evaluated?", "method"),
        ("What are the drawbacks of the ReLU activation?", "cons"),
        ("What are the main advantages of ReLU?", "pros"),
        ("How is the KL divergence defined?", None),  # "defined" asks for a definition: no kind
        ("How does beam search work?", None),
        ("What is the time complexity of binary search in big-O terms?", None),  # a long "what is": no kind
        ("Can I change the delivery address after placing an order?", None),
        ("What's the impact of the batch size when training?", None),  # a "when" mid-sentence is not a question word
        ("When should I use a tuple instead of a list?", "usage"),
        ("When to avoid recursion in Python?", "usage"),
        ("Is there a fee to request a wheelchair at the airport?", "quantity"),
        ("I want to close my savings account. What are the steps?", "action"),
    ],
)
def test_question_intent(text, kind):
    assert question_intent(text) == kind


@pytest.mark.parametrize(
    "a, b, agree",
    [
        ("How do I fix the vanishing gradient problem?", "What is the vanishing gradient problem?", False),
        ("How do I detect overfitting?", "What is overfitting?", False),
        ("What causes hiccups?", "How do I get rid of hiccups?", False),
        ("How big should a validation set be?", "Why do we need a validation set?", False),
        ("How is a recommender system evaluated?", "What is a recommender system?", False),
        ("What are the drawbacks of the ReLU activation?", "Why is the ReLU activation so popular?", False),
        ("Who invented the telephone?", "When was the telephone invented?", False),
        ("How much does it cost to add another user to my account?", "How do I add another user to my account?", False),
        ("What are the disadvantages of dependency injection?", "What is dependency injection?", False),
        ("Where did the Titanic sink?", "When did the Titanic sink?", False),
        (
            "How do I solve the cold start problem in recommender systems?",
            "What is the cold start problem in recommender systems?",
            False,
        ),
        ("What's the formula to turn kg into lbs?", "How do I convert kilograms to pounds?", True),
        ("What's the Java property that gives an array's size?", "How do I find the length of an array in Java?", True),
        # paraphrases whose question words differ, and must stay hits
        ("What was the end date of WWII?", "When did World War II end?", True),
        ("How much is fifteen percent of 80?", "What is 15% of 80?", True),
        ("Why do gradients become tiny in deep networks?", "What is the vanishing gradient problem?", True),
        ("Where do I turn on 2FA for my account?", "How do I enable two-factor authentication?", True),
        ("How does beam search decoding work?", "What is beam search?", True),
        ("How is Kullback-Leibler divergence defined?", "What is the KL divergence?", True),
        ("When am I able to check in online?", "How many days before the flight can I check in online?", True),
        ("Who proposed the GELU activation function?", "What is the GELU activation function?", False),
        ("When should I avoid using a lambda function in Python?", "What is a lambda function in Python?", False),
        ("When should I use a lambda function?", "How do I write a lambda function?", False),
        ("Is there a fee to request a wheelchair at the airport?", "How do I request a wheelchair at the airport?", False),
        ("How can you tell an alligator from a crocodile?", "What is the difference between a crocodile and an alligator?", True),
        ("How were the pyramids of Giza built?", "When were the pyramids of Giza built?", False),  # method vs time
    ],
)
def test_intents_agree(a, b, agree):
    assert (rule(intents_agree, a, b) is None) == agree


@pytest.mark.parametrize(
    "a, b, agree",
    [
        (
            "What is the difference between batch normalization and layer normalization?",
            "What does batch normalization do?",
            False,
        ),
        ("Python list vs tuple", "What is a Python tuple?", False),
        ("How does Adam differ from SGD with momentum?", "Compared to SGD with momentum, what does Adam do differently?", True),
        ("How is a meteorite different from a meteor?", "What is the difference between a meteor and a meteorite?", True),
        ("How can you tell an alligator from a crocodile?", "What is the difference between a crocodile and an alligator?", True),
        ("Can I use baking soda instead of baking powder?", "Can I substitute baking soda for baking powder?", True),
        (
            "When do I use padding and when do I use margin in CSS?",
            "What is the difference between margin and padding in CSS?",
            True,
        ),
        ("Postgres or MySQL: which should I use?", "PostgreSQL vs MySQL", True),
    ],
)
def test_comparison_agrees(a, b, agree):
    assert (rule(comparison_agrees, a, b) is None) == agree


def test_no_word_swap_costs_synonyms_it_does_not_know():
    # The known price of the rule: a synonym outside SYNONYMS in an otherwise fixed frame is refused (a miss,
    # never a wrong answer). The benchmark's recall counts these.
    assert (
        rule(no_word_swap, "Who is the author of Pride and Prejudice?", "Who wrote Pride and Prejudice?")
        == "words swapped: author vs wrot"
    )


def test_second_check_combines_rules_and_explains_itself():
    ok = second_check("What's the cleanest way to reverse a Python list?", "How do I reverse a list in Python?")
    assert ok.ok and ok.reasons == ()
    bad = second_check("What's new in Python 3.11?", "What's new in Python 3.12?")
    assert not bad.ok and any(r.startswith("numbers differ") for r in bad.reasons)
    both = second_check("Why can't I log in on Windows?", "Why can I log in on macOS?")
    assert {r.split(":")[0] for r in both.reasons} >= {"negation differs", "names differ"}
    only_numbers = second_check("What's new in Python 3.11?", "What's new in Python 3.12?", rules=(numbers_agree,))
    assert len(only_numbers.reasons) == 1


def test_checks_follow_the_protocol():
    assert RuleCheck()("How do I reset my username?", "How do I reset my password?").ok is False
    assert PlainCosine()("How do I reset my username?", "How do I reset my password?").ok is True
    assert 0 < RuleCheck().default_threshold < PlainCosine().default_threshold <= 1


def test_shouted_text_has_no_names():
    assert analyse("HOW DO I RESET MY PASSWORD?").entities == frozenset()
    assert second_check("HOW DO I RESET MY PASSWORD?", "How do I reset my password?").ok
