"""Training: the loop, checkpoints, optimizers, schedules, tracking. (`strop.train(config)`, the library
call, is this package made callable by strop/__init__.py.)"""
