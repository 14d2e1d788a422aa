"""The supporter (ES-VR's contribution): SFT on the simulated dialogues, rollouts, the value and emotion rewards,
DPO pair mining, and the two DPO trainings (value reward = ES-VR, emotion reward = the Emotion-DPO baseline)."""
