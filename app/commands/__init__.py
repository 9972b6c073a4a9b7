"""The command line's subcommands, one module each (`talk`, `chat`, `devices`, `download`,
`doctor`, `bench`, `self-test`), and `arguments`, what the ones that run the model share."""
