defmodule CouncilEx.NodeLogTest do
  use ExUnit.Case, async: true
  doctest CouncilEx.Node, only: [parse_log_line: 1]

  alias CouncilEx.Node

  test "C node log lines map to Logger levels" do
    assert Node.parse_log_line("[debug] x") == {:debug, "x"}
    assert Node.parse_log_line("[info] listening on 127.0.0.1") == {:info, "listening on 127.0.0.1"}
    assert Node.parse_log_line("[warning] y") == {:warning, "y"}
    assert Node.parse_log_line("[error] bad frame] from peer") == {:error, "bad frame] from peer"}
    assert Node.parse_log_line("[crit] z") == {:critical, "z"}
    assert Node.parse_log_line("[whatever] z") == {:info, "z"}
    assert Node.parse_log_line("no level") == {:info, "no level"}
    assert Node.parse_log_line("[unterminated") == {:info, "[unterminated"}
  end
end
