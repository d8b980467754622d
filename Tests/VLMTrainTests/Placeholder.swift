import Testing
@testable import VLMTrain
