# Sourced by the launch scripts: `quoted WORD...` prints the words as a shell would read
# them back, plain words as they are and any other in single quotes.
quoted() {
  local arg words=()
  for arg; do
    if [[ $arg == "$(printf %q "$arg")" ]]; then words+=("$arg")
    elif [[ $arg != *\'* ]]; then words+=("'$arg'")
    else words+=("$(printf %q "$arg")"); fi
  done
  echo "${words[*]}"
}
