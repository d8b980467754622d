import VLMCore
