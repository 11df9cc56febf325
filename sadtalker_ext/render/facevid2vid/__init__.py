"""SadTalker's face renderer (face-vid2vid): keypoint detector, dense motion, SPADE generator."""
