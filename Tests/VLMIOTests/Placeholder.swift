import Testing
@testable import VLMIO
