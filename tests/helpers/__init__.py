"""What the tests share: data, tiny LoRA models, trainer set-ups, bad inputs, multi-process and Axolotl runs, the
simulated ZeRO-3, the Fisher references, the warnings a recipe run may print. One module per concept; test modules
import from here, never from each other."""
