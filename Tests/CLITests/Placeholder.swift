import Testing
@testable import VLMCore
