"""Using a trained model: loading it safely, running it in each runtime, predicting,
evaluating, test-time augmentation and exporting. Never imports training."""
