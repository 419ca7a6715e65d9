"""The fusion calibration tests' data (test_calibration.py, test_calibration_encoder.py):
eight passages, five questions, each with one relevant passage."""

TEXTS = [
    "The Amazon rainforest covers most of the Amazon basin of South America.",
    "Paris is the capital and most populous city of France.",
    "The mitochondrion is the powerhouse of the cell.",
    "Photosynthesis turns light energy into chemical energy in plants.",
    "The Great Wall of China was built over many centuries.",
    "Python is a programming language that emphasises readability.",
    "The Pacific is the largest and deepest of the oceans.",
    "Mount Everest is Earth's highest mountain above sea level.",
]
QUERIES = {
    "q0": "Which forest covers the Amazon basin?",
    "q1": "What is the capital of France?",
    "q2": "What is the powerhouse of the cell?",
    "q3": "How do plants turn light into energy?",
    "q4": "Which ocean is the largest?",
}
QRELS = {
    "q0": {"d0": 1.0},
    "q1": {"d1": 1.0},
    "q2": {"d2": 1.0},
    "q3": {"d3": 1.0},
    "q4": {"d6": 1.0},
}
CORPUS = {f"d{i}": t for i, t in enumerate(TEXTS)}
