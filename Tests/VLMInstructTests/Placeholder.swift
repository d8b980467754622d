import Testing
@testable import VLMInstruct
