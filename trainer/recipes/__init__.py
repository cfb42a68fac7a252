"""The recipes of the shipped model: `default_model.sh` (every command, in order), and the helpers a
lent GPU machine runs it with (`pack_photos.py` carries the prepared photos there, `gpu_study.sh`
and `recipe_study.py` compare the recipe's choices and train the winner)."""
